#!/usr/bin/env bash
# CUDA smoke test and speed figure (run on a GPU machine from the repository root):
#   bash benchmarks/gpu_smoke.sh
set -euo pipefail
make install >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
python -c 'import torch; assert torch.cuda.is_available(), "no CUDA"; print(torch.cuda.get_device_name())'
python benchmarks/register_pair.py --device cuda --repeats 3 --check
python benchmarks/evaluate_pair.py --device cuda
out=$(mktemp -d)
snakemake --profile profiles/demo --configfile workflow/presets/tiny.yaml \
  --config device=cuda "results=$out/results" "data_root=$out/data" -q
grep -h "cuda" "$out"/results/fields/*/bigalke/default/seed0/timing.csv | head -3
cat "$out/results/tables/table1.md" | head -20
