"""Benchmark: one training iteration of Bigalke et al. (registration loss) vs CoRe
(registration + contrastive loss), same data, same device.

    python benchmarks/train_iteration.py [--shape 96 80 128] [--iters 5] [--threads 2] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import yaml

from corereg.config import deep_merge
from corereg.data.manifest import load_manifest
from corereg.data.synthetic import generate_abdomen
from corereg.device import describe, resolve_device, synchronize
from corereg.params import EngineParams
from corereg.registration import network
from corereg.training.selftrain import Trainer, load_data


def time_steps(data, params, device, iters) -> float:
    params = EngineParams.from_mapping(params)
    tr = Trainer(data, params, 0, device, "unused", clamp_eval=None, log=lambda *_: None)
    half = tuple(n // 2 for n in data.shape)
    tr.labels = torch.zeros(len(data.train_pairs), 3, *half)
    tr.weights = torch.ones(len(data.train_pairs))
    tr.gens = {k: torch.Generator().manual_seed(0) for k in ("sample", "aug", "proj")}
    tr.net = network.build(params).to(device)
    tr._fresh_optim()
    tr.total = 10 * iters
    tr.step(1)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    for i in range(iters):
        tr.step(i + 2)
    synchronize(device)
    return (time.perf_counter() - t0) / iters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 80, 128])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--samples", type=int, default=1000)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    engine = yaml.safe_load(open("config.yaml"))["engine"]
    with tempfile.TemporaryDirectory() as tmp:
        spacing = tuple(2.0 * 192 / a.shape[0] for _ in range(3))
        generate_abdomen(f"{tmp}/d", "bench", tuple(a.shape), spacing, 3, 2, seed=0)
        data = load_data(load_manifest(f"{tmp}/d"), None, 1)
        crop = max(1, min(8, a.shape[0] // 8))
        base = deep_merge(
            engine,
            {
                "label_crop_border": crop,
                "cl_num_samples": a.samples,
                "cl_border": min(5, a.shape[0] // 16),
            },
        )
        reg = time_steps(data, {**base, "contrastive": False}, device, a.iters)
        print(
            f"{describe(device)} {tuple(a.shape)}, {a.threads} threads: bigalke {reg:.3f} s/iteration"
        )
        for views, grad in (
            ("separate", True),
            ("listing1", True),
            ("listing1", False),
            ("separate", False),
        ):
            params = {**base, "contrastive": True, "cl_views": views, "cl_view_b_grad": grad}
            core = time_steps(data, params, device, a.iters)
            print(
                f"  core cl_views={views:8s} cl_view_b_grad={str(grad).lower():5s}: {core:.3f} s/iteration, "
                f"overhead {100 * (core / reg - 1):.0f} %"
            )


if __name__ == "__main__":
    main()
