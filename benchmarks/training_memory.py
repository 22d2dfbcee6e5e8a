"""Peak memory of a training job against the number of training scans, at the
RAD-ChestCT geometry (256×256×224 at 1.5 mm).

Builds a synthetic chest dataset once (``--work``/base: a handful of rendered
phantom pairs), then datasets of ``--scans`` training scans each, whose cases are
hard links to the rendered ones (every case is a file of its own, read and held
separately like a real scan).  Each (method, scan count) trains through
``python -m corereg train`` in a process of its own, with config.yaml's paper
settings except the iteration counts (``--stages`` × ``--iters`` iterations)
and the cheapest pseudo-labels: one warp, no inverse consistency, no Adam, ``--engine``);
the process's peak RSS, wall time
and the ``data_wait`` phase of its costs.json land in ``--csv``.

``--src`` runs another checkout's package (e.g. a version before the scan cache, for
the "before" figures) and ``--legacy`` leaves out the options that version lacks.

    python benchmarks/training_memory.py --work /tmp/memwork --scans 8 64 \\
        --methods bigalke core --csv benchmarks/training_memory/after.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE, SPACING = (256, 256, 224), (1.5, 1.5, 1.5)


def base_dataset(work: Path, pairs: int) -> Path:
    from corereg.data.synthetic import generate_chest

    base = work / "base"
    if not (base / "manifest.json").is_file():
        t0 = time.perf_counter()
        generate_chest(base, "radchest", SHAPE, SPACING, pairs, 1, seed=0)
        print(f"rendered {2 * pairs + 2} phantom scans in {time.perf_counter() - t0:.0f} s")
    return base


def scaled_dataset(work: Path, base: Path, scans: int) -> Path:
    """``scans`` training scans (scans/2 longitudinal pairs) and one validation pair,
    every case a hard link of a rendered one."""
    from corereg.data.manifest import load_manifest, write_manifest

    out = work / f"scans{scans}"
    if (out / "manifest.json").is_file():
        return out
    m = load_manifest(base)
    train = [c for c in m.cases() if c["split"] == "train"]
    test = [c for c in m.cases() if c["split"] == "test"]
    cases, pairs = [], []
    for k in range(scans + 2):
        src = (train if k < scans else test)[k % len(train) if k < scans else k - scans]
        case_id = f"{k + 1:04d}"
        entry = {"id": case_id, "split": "train" if k < scans else "val"}
        for key in ("image", "label"):
            rel = f"{key}s/{case_id}.nii.gz"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(base / src[key], out / rel)
            entry[key] = rel
        cases.append(entry)
        if k % 2 == 1:
            split = "train" if k < scans else "val"
            pairs.append({"fixed": f"{k:04d}", "moving": case_id, "split": split})
    write_manifest(
        out, "radchest", "RadChestCT", "synthetic_chest", SHAPE, SPACING, m.labels, cases, pairs, 0
    )
    return out


def train_spec(method: str, a) -> dict:
    import yaml

    sys.path.insert(0, str(ROOT / "src"))
    from corereg.config import deep_merge
    from corereg.workflow.jobs import Plan, Run

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    spec = Plan(cfg).train_spec(Run("radchest", method, "default", 0))
    spec["params"] = deep_merge(
        spec["params"],
        {
            "stages": a.stages,
            "iters_per_stage": a.iters,
            "val_pairs": 1,
            "val_every": 10**6,
            **{k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in a.engine)},
        },
    )
    return spec


def run(method: str, data: Path, a) -> dict:
    out = a.work / "runs" / f"{method}-{data.name}"
    spec_file = a.work / f"spec-{method}.json"
    spec_file.write_text(json.dumps(train_spec(method, a)))
    cmd = [sys.executable, "-m", "corereg", "train", "--data", str(data), "--method", method]
    cmd += ["--spec", f"@{spec_file}", "--device", "cpu", "--threads", str(a.threads)]
    cmd += ["--out", str(out)]
    if not a.legacy:
        cmd += ["--data-on-device", a.on_device, "--cache-dir", str(a.work / "cache")]
    env = {**os.environ, "PYTHONPATH": str(a.src)}
    t0 = time.perf_counter()
    with open(a.work / f"{method}-{data.name}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    costs = {}
    if (out / "costs.json").is_file():
        costs = json.loads((out / "costs.json").read_text())
    phases = costs.get("phases", {})
    n_scans = int(data.name.removeprefix("scans"))
    return {
        "method": method,
        "train_scans": n_scans,
        "train_pairs": n_scans // 2,
        "exit": os.waitstatus_to_exitcode(status),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
        "seconds": round(seconds, 1),
        "data_wait_s": round(phases.get("data_wait", {}).get("seconds", 0.0), 2),
        "train_iteration_s": phases.get("train_iteration", {}).get("per_unit_s"),
        "pseudo_label_pair_s": phases.get("pseudo_labels", {}).get("per_unit_s"),
        "placement": costs.get("data_placement", "all in memory (before the cache)"),
        "code": "legacy" if a.legacy else "current",
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="scratch folder (datasets, runs)")
    p.add_argument("--scans", type=int, nargs="+", default=[8, 64])
    p.add_argument("--methods", nargs="+", default=["bigalke", "core"])
    p.add_argument("--stages", type=int, default=2)
    p.add_argument("--iters", type=int, default=1, help="iterations per stage")
    p.add_argument(
        "--engine",
        action="append",
        default=["adam_iters=1", "ice=false", "num_warps=1", "use_adam_for_labels=false"],
        metavar="KEY=VALUE",
        help="engine settings over config.yaml's (default: the cheapest pseudo-labels, whose "
        "count and size, not cost, is what the memory depends on)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--on-device", default="auto", help="--data-on-device of corereg train")
    p.add_argument("--src", type=Path, default=ROOT / "src", help="the package to run")
    p.add_argument("--legacy", action="store_true", help="the --src version has no cache options")
    p.add_argument("--csv", type=Path, required=True, help="results table (rows are appended)")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    base = base_dataset(a.work, 4)
    a.csv.parent.mkdir(parents=True, exist_ok=True)
    for n in a.scans:
        data = scaled_dataset(a.work, base, n)
        for method in a.methods:
            row = run(method, data, a)
            print(json.dumps(row), flush=True)
            new = not a.csv.is_file()
            with open(a.csv, "a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)


if __name__ == "__main__":
    main()
