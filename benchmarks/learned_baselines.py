"""Do the learned baselines generalise? VoxelMorph and LapIRN on held-out pairs.

Builds the deformed-copies phantom set (one abdominal phantom under random smooth
deformations, 6 training scans = 15 training pairs, 3 held-out scans = 3 test pairs),
trains each model with the given schedule through the pipeline's own trainer and
prints the mean Dice gain over 'initial' on the held-out and on training pairs, the
training time and the inference time per pair.  Too slow for the test suite with
schedules long enough for LapIRN (a few hundred iterations on 2 CPU threads).

    python benchmarks/learned_baselines.py                      # the schedules below
    python benchmarks/learned_baselines.py --lapirn-levels 30 30 30 --vxm-iterations 60
    python benchmarks/learned_baselines.py --device cuda --lapirn-levels 1000 1000 2000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from corereg.adapters import make_method
from corereg.baselines import learned
from corereg.data.manifest import load_manifest
from corereg.data.synthetic import generate_deformed
from corereg.device import resolve_device, set_threads
from corereg.evaluation import dice_per_label, warp_labels

LABELS = range(1, 14)
# The short CPU settings of the tests (tests/test_learned.py), schedules from the command line.
COMMON = {"lr": 3e-3, "window": [-300, 300], "val_every": 100, "ckpt_every": 100000}
MODELS = {
    "voxelmorph": {"nb_features": [8, 16, 16, 16], "integration_steps": 5, "lambda_grad": 0.3},
    "lapirn": {
        "channels": 4,
        "n_res": 1,
        "freeze_iters": 5,
        "lambda_smooth": 0.3,
        "ncc_window": [5, 7, 9],
    },
}


def gains(data, method, split: str, limit: int = 6) -> tuple[float, float]:
    out, secs = [], []
    for pair in data.pairs(split)[:limit]:
        fixed, moving = data.load_image(pair["fixed"])[0], data.load_image(pair["moving"])[0]
        fl, ml = data.load_labels(pair["fixed"]), data.load_labels(pair["moving"])
        t0 = time.perf_counter()
        disp = method.register(fixed, moving)
        secs.append(time.perf_counter() - t0)
        before = np.nanmean(dice_per_label(fl, ml, LABELS))
        out.append(np.nanmean(dice_per_label(fl, warp_labels(ml, disp), LABELS)) - before)
    return float(np.mean(out)), float(np.mean(secs))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--vxm-iterations", type=int, default=60)
    ap.add_argument("--lapirn-levels", type=int, nargs=3, default=[100, 100, 400])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    set_threads(a.threads)
    device = resolve_device(a.device)
    schedules = {
        "voxelmorph": {"iterations": a.vxm_iterations},
        "lapirn": {"level_iterations": a.lapirn_levels},
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = load_manifest(generate_deformed(Path(tmp) / "deformed", n_train=6))
        print(
            f"device {device}; {len(data.pairs('train'))} training pairs, {len(data.pairs('test'))} held-out"
        )
        print(
            "| model | schedule | train s | held-out Dice gain | training-pair gain | s per pair |"
        )
        print("|---|---|---|---|---|---|")
        for kind, model in MODELS.items():
            params = {**COMMON, **model, **schedules[kind]}
            spec = {
                "kind": kind,
                "params": params,
                "seed": a.seed,
                "dataset": {"eval_labels": list(LABELS)},
            }
            t0 = time.perf_counter()
            final = learned.train(data, spec, device, Path(tmp) / kind, log=lambda *_: None)
            train_s = time.perf_counter() - t0
            method = make_method(kind, {}, device, final)
            held, secs = gains(data, method, "test")
            train_gain, _ = gains(data, method, "train")
            print(
                f"| {kind} | {schedules[kind]} | {train_s:.0f} | {100 * held:+.1f} | {100 * train_gain:+.1f} "
                f"| {secs:.2f} |"
            )


if __name__ == "__main__":
    main()
