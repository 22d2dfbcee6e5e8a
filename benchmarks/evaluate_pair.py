"""Benchmark: phantom generation, ConvexAdam and the evaluation of one pair at paper size.

    python benchmarks/evaluate_pair.py [--shape 192 160 256] [--spacing 2 2 2] [--threads 2]

Prints seconds per phase and peak resident memory.  Not a test: speed goals are
checked here, by a person, on the machine at hand.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import torch

from corereg.adapters import make_method
from corereg.data.manifest import load_manifest
from corereg.data.synthetic import generate_abdomen
from corereg.device import describe, resolve_device
from corereg.evaluation import evaluate_pair
from corereg.registration import timed_register


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=3, default=[192, 160, 256])
    ap.add_argument("--spacing", type=float, nargs=3, default=[2.0, 2.0, 2.0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        generate_abdomen(f"{tmp}/d", "bench", a.shape, a.spacing, 2, 2, seed=0)
        print(f"phantoms (4 scans):       {time.perf_counter() - t:7.2f} s")
        m = load_manifest(f"{tmp}/d")
        pair = m.pairs("test")[0]
        fixed, _ = m.load_image(pair["fixed"])
        moving, _ = m.load_image(pair["moving"])
        method = make_method("convexadam", {}, device)
        if device.type == "cuda":
            timed_register(method, fixed, moving)
        disp, secs = timed_register(method, fixed, moving)
        print(f"convexadam ({describe(device)}): {secs:7.2f} s")
        t = time.perf_counter()
        _, summary = evaluate_pair(
            m.load_labels(pair["fixed"]),
            m.load_labels(pair["moving"]),
            disp,
            sorted(m.labels),
            m.spacing,
        )
        print(f"evaluation (13 labels):   {time.perf_counter() - t:7.2f} s")
        print(
            f"Dice {summary['dice']:.3f}  HD95 {summary['hd95']:.1f} mm  SDlogJ(L2R) {summary['sdlogj_l2r']:.3f}"
        )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    assert np.isfinite(summary["dice"])


if __name__ == "__main__":
    main()
