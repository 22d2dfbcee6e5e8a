"""Benchmark: the engine's registration of one pair, phase by phase.

    python benchmarks/register_pair.py [--shape 192 160 256] [--threads 2] [--device auto] [--check]

Phases: G+P on both images, H with ICE, the second warp (H with ICE again and the
composition), Adam instance optimisation; peak memory (RSS on the CPU, allocator
peak on CUDA).  ``--check`` also runs the straightforward reference implementation
(Adam with ``grid_sample``) with the same seed and reports the largest
field difference.  A benchmark, not a test: run it on the machine at hand.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from corereg.data.synthetic import render_abdomen
from corereg.device import describe, resolve_device, synchronize
from corereg.params import EngineParams
from corereg.registration import adam as adam_mod
from corereg.registration import convex, network
from corereg.registration.fields import compose, warp
from corereg.registration.pipeline import prepare_input

# the engine constants of config.yaml (run from the repository root), AMP on CUDA
PARAMS = EngineParams.from_mapping(
    {**yaml.safe_load(Path("config.yaml").read_text())["engine"], "amp": True}
)


def timed(device, fn, *args):
    synchronize(device)
    t0 = time.perf_counter()
    out = fn(*args)
    synchronize(device)
    return out, time.perf_counter() - t0


def run(net, fixed, moving, device, seed=0, impl="auto"):
    p, clamp = PARAMS, (-0.4, 0.6)
    fx, mv = prepare_input(fixed, p, clamp), prepare_input(moving, p, clamp)
    times = {}
    amp = torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda")
    with torch.no_grad(), amp:
        (ff, fm), times["G+P"] = timed(device, lambda: (net(fx), net(mv)))
        d0, times["H+ICE"] = timed(device, convex.optimise, ff, fm, fx.shape[2:], True, p)

        def second():
            moved = warp(mv.float(), d0, "nearest").clamp(*clamp)
            return compose(d0, convex.optimise(ff, net(moved), fx.shape[2:], True, p), "code")

        d, times["2nd warp"] = timed(device, second)
        (g2f, g2m) = net.g2(fx), net.g2(mv)
    ffa, fma = adam_mod.adam_features(g2f, g2m, torch.Generator().manual_seed(seed))
    u, times["Adam IO"] = timed(device, adam_mod.adam_refine, ffa, fma, d, 1.0, p, impl)
    return u, times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=3, default=[192, 160, 256])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--check", action="store_true", help="compare with the reference implementation"
    )
    ap.add_argument(
        "--compare-cpu",
        action="store_true",
        help="on CUDA: run the same network and pair on the CPU (no AMP) and report the "
        "field difference in voxels; fails above --tolerance (mean)",
    )
    ap.add_argument("--tolerance", type=float, default=0.5, help="mean voxels (default 0.5)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    torch.manual_seed(0)
    spacing = tuple(2.0 * 192 / a.shape[0] for _ in range(3))
    imgs = [render_abdomen(tuple(a.shape), spacing, np.random.default_rng(k))[0] for k in (1, 2)]
    fixed, moving = (torch.from_numpy(i)[None, None].to(device) for i in imgs)
    net = network.FeatureNet().to(device).eval()
    if device.type == "cuda":
        run(net, fixed, moving, device)  # warm-up
        torch.cuda.reset_peak_memory_stats()
    for _ in range(a.repeats):
        u, times = run(net, fixed, moving, device)
        total = sum(times.values())
        print(
            f"{describe(device)} {tuple(a.shape)}: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
            + f", total {total:.2f} s"
        )
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GiB")
    if a.compare_cpu and device.type == "cuda":
        cpu = torch.device("cpu")
        torch.set_num_threads(max(a.threads, torch.get_num_threads()))
        u_cpu, t_cpu = run(net.to(cpu), fixed.to(cpu), moving.to(cpu), cpu)
        net.to(device)
        vox = torch.tensor([s / 2 for s in a.shape]).flip(0).view(1, 3, 1, 1, 1)
        diff = ((u.cpu() - u_cpu) * vox).abs()
        print(
            f"CPU (fp32) run {sum(t_cpu.values()):.1f} s; |CUDA - CPU| field: mean "
            f"{diff.mean().item():.3g}, 99th percentile {np.percentile(diff.numpy(), 99):.3g}, "
            f"max {diff.max().item():.3g} voxels (tolerance: mean {a.tolerance})"
        )
        if diff.mean().item() > a.tolerance:
            raise SystemExit("CUDA and CPU fields differ by more than the tolerance")
    if a.check:
        ref, rt = run(net, fixed, moving, device, impl="grid_sample")
        vox = torch.tensor([s / 2 for s in a.shape], device=u.device).flip(0).view(1, 3, 1, 1, 1)
        print(
            f"straightforward (grid_sample) Adam IO {rt['Adam IO']:.2f} s; max |field difference| "
            f"{((ref - u) * vox).abs().max().item():.3g} voxels"
        )


if __name__ == "__main__":
    main()
