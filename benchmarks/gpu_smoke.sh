#!/usr/bin/env bash
# The paper-scale smoke on a CUDA GPU, run from the repository root of a GPU machine:
#   bash benchmarks/gpu_smoke.sh            # about 10 min: AbdomenCT geometry, CoRe
#   FULL=1 bash benchmarks/gpu_smoke.sh     # every method and variant (make paperscale)
# Python: .venv when `make install` made it, else the python on PATH when it has torch
# with CUDA and snakemake, else `make install` runs first.  Everything it writes lands in
# OUT (default benchmarks/gpu/): the log, the run's tables, and costs.yaml, the measured
# cost file with this GPU's figures added (copy it to workflow/costs.yaml to use them).
#
# Steps and what passes:
#  1. the engine on one AbdomenCT-sized pair (192x160x256) on CUDA with AMP, three times,
#     and the same network on the CPU without AMP: the mean field difference must stay
#     below 0.5 voxels;
#  2. the paper-scale smoke through the real rules with device=cuda and AMP on (the
#     paper's code): training, pseudo-labels, the reg_fac search, evaluation, Table 1;
#  3. its per-pair Dice must agree with the committed CPU run (benchmarks/paperscale/
#     cpu_pairs.csv) within 3 Dice points and its SDlogJ within 0.03;
#  4. prints T_inf per pair (paper: 1.2 s AbdomenCT, 1.9 s RadChestCT), seconds per
#     training iteration and pseudo-label pair, and the peak GPU memory of each job.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_smoke.log") 2>&1
export PYTHONUNBUFFERED=1

if [ -x .venv/bin/python ]; then
  export PATH="$PWD/.venv/bin:$PATH"
elif python3 -c 'import torch, snakemake, nibabel; assert torch.cuda.is_available()' 2>/dev/null; then
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  mkdir -p "$OUT/bin" && ln -sf "$(command -v python3)" "$OUT/bin/python"
  export PATH="$PWD/$OUT/bin:$PATH"
else
  make install >/dev/null
  export PATH="$PWD/.venv/bin:$PATH"
fi
python -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)'
start=$(date +%s)

echo "== 1. engine, one AbdomenCT-sized pair, CUDA (AMP) vs CPU"
python benchmarks/register_pair.py --device cuda --repeats 3 --compare-cpu --threads "$(nproc)"

echo "== 2. paper-scale smoke on CUDA"
res="$OUT/paperscale"
where="$OUT/where.yaml"
printf 'results: %s/results\ndata_root: %s/data\ndevice: cuda\n' "$res" "$res" >"$where"
presets=(workflow/presets/paperscale.yaml)
target=()
if [ -z "${FULL:-}" ]; then
  presets+=(workflow/presets/paperscale_ci.yaml)
  target=(table1)
fi
t0=$(date +%s)
snakemake "${target[@]}" --profile profiles/demo --cores "$(nproc)" --resources mem_mb=100000 \
  --configfile "${presets[@]}" "$where" -q
echo "paper-scale smoke on CUDA: $(( $(date +%s) - t0 )) s"

echo "== 3. CUDA vs the committed CPU run"
python - "$res/results" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

res = Path(sys.argv[1])
ref = pd.read_csv("benchmarks/paperscale/cpu_pairs.csv", dtype={"fixed": str, "moving": str})
bad = []
for (ds, method, variant), cpu in ref.groupby(["dataset", "method", "variant"]):
    path = res / "metrics" / ds / method / variant / "seed0" / "pairs.csv"
    if not path.is_file():
        continue
    gpu = pd.read_csv(path, dtype={"fixed": str, "moving": str})
    both = cpu.merge(gpu, on=["fixed", "moving"], suffixes=("_cpu", "_gpu"))
    for _, r in both.iterrows():
        dd = 100 * abs(r.dice_cpu - r.dice_gpu)
        ds_ = abs(r.sdlogj_l2r_cpu - r.sdlogj_l2r_gpu)
        print(
            f"{ds} {method}/{variant} {r.fixed}<-{r.moving}: Dice CPU {100 * r.dice_cpu:.1f} "
            f"CUDA {100 * r.dice_gpu:.1f}; SDlogJ {r.sdlogj_l2r_cpu:.3f} / {r.sdlogj_l2r_gpu:.3f}; "
            f"T_inf CUDA {r.seconds_gpu:.2f} s (network {r.net_seconds_gpu:.2f} s, Adam "
            f"{r.adam_seconds_gpu:.2f} s x {int(r.search_rounds_gpu)} search rounds); "
            f"peak GPU {r.get('peak_cuda_reserved_mb_gpu', float('nan')):.0f} MB"
        )
        if dd > 3 or ds_ > 0.03:
            bad.append(f"{ds} {method}/{variant} {r.fixed}<-{r.moving}")
if bad:
    sys.exit(f"CUDA and CPU disagree beyond 3 Dice points / 0.03 SDlogJ: {bad}")
print("CUDA agrees with the CPU run (3 Dice points, 0.03 SDlogJ)")
EOF

echo "== 4. training on CUDA"
for c in "$res"/results/models/*/*/*/seed0/costs.json; do
  python - "$c" <<'EOF'
import json
import sys

c = json.load(open(sys.argv[1]))
if c.get("not_run"):
    sys.exit()
ph = c["phases"]
parts = [f"{k} {v['steady_s']:.3f} s/unit" for k, v in ph.items()]
print(sys.argv[1].split("models/")[1].rsplit("/", 2)[0], "|", "; ".join(parts), "| peak", c["peak"])
EOF
done

cp workflow/costs.yaml "$OUT/costs.yaml"
python -m corereg costs update --configfile "${presets[@]}" "$where" --out "$OUT/costs.yaml" >/dev/null
echo "cost file with this GPU's figures: $OUT/costs.yaml"
echo "gpu_smoke finished in $(( $(date +%s) - start )) s"
