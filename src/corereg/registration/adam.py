"""Adam instance optimisation of a displacement field (docs/method.md)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from corereg.device import synchronize
from corereg.params import EngineParams
from corereg.registration import fastwarp
from corereg.registration.fields import avg3, identity_grid


def adam_impl_for(device: torch.device, impl: str = "auto") -> str:
    """engine.adam_impl: auto is the fused CPU warp on the CPU and grid_sample on CUDA."""
    if impl == "auto":
        return "grid_sample" if device.type == "cuda" else "fused"
    return impl


def random_projection(cin: int, cout: int, generator: torch.Generator, device) -> torch.Tensor:
    """A 1x1x1 conv weight without bias, U(±1/sqrt(cin)) as PyTorch's default init."""
    bound = 1.0 / cin**0.5
    w = (torch.rand(cout, cin, 1, 1, 1, generator=generator, device="cpu") * 2 - 1) * bound
    return w.to(device)


def adam_features(g2_fix, g2_mov, generator, scale=5.0, channels=32):
    w = random_projection(g2_fix.shape[1], channels, generator, g2_fix.device)
    return scale * F.conv3d(g2_fix.float(), w), scale * F.conv3d(g2_mov.float(), w)


def _ssd_grid_sample(feat_mov, feat_fix, grid):
    warped = F.grid_sample(
        feat_mov, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return ((warped - feat_fix) ** 2).mean(1).mean()


def adam_refine(
    feat_fix,
    feat_mov,
    field,
    reg_fac: float,
    p: EngineParams,
    impl: str | None = None,
    history: list | None = None,
    timings: dict | None = None,
) -> torch.Tensor:
    """Refine a full-resolution normalised field by Adam on the 1/``grid_sp`` grid.

    Loss = 12 · mean_p mean_c (Φ_m(p + ū) − Φ_f(p))² + reg_fac · λ · Σ_axes mean(Δū²),
    ū = three 3³ box filters of the parameter.  Returns the normalised field of the
    last iteration's ū (before its optimiser step, as the code does), upsampled and
    smoothed by three more box filters.  ``timings`` (a dict) receives ``steps_s``, the
    seconds of the optimisation loop alone (its set-up excluded).
    """
    iters, lr, gs = p.adam_iters, p.adam_lr, p.adam_grid_sp
    lam, cost_scale = p.adam_lambda, p.adam_cost_scale
    big, small = field.shape[2:], tuple(n // gs for n in field.shape[2:])
    dev = field.device
    hr_scale = torch.tensor([(n - 1) / 2.0 for n in big], device=dev).view(1, 3, 1, 1, 1)
    lr_scale = torch.tensor([(n - 1) / 2.0 for n in small], device=dev)
    disp = field.float().flip(1) * hr_scale
    theta = (F.interpolate(disp, size=small, mode="trilinear", align_corners=False) / gs).detach()
    theta.requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    grid0 = identity_grid(small, dev)
    feat_fix, feat_mov = feat_fix.float(), feat_mov.float()
    impl = adam_impl_for(dev, impl or p.adam_impl)
    if impl == "fused":
        mov_cl, fix_cl = fastwarp.channels_last(feat_mov), fastwarp.channels_last(feat_fix)
        ssd = lambda grid: fastwarp.warp_ssd(mov_cl, fix_cl, grid, small)  # noqa: E731
    elif impl == "grid_sample":
        ssd = lambda grid: _ssd_grid_sample(feat_mov, feat_fix, grid)  # noqa: E731
    else:
        raise ValueError(f"impl must be auto, fused or grid_sample, not '{impl}'")
    smooth = theta
    if timings is not None:
        synchronize(dev)
        t0 = time.perf_counter()
    with torch.enable_grad():
        for _ in range(iters):
            opt.zero_grad(set_to_none=True)
            smooth = avg3(theta, 3)
            reg = lam * sum((smooth.diff(dim=k) ** 2).mean() for k in (3, 2, 4))
            grid = grid0 + (smooth.permute(0, 2, 3, 4, 1) / lr_scale).flip(-1)
            sim = cost_scale * ssd(grid)
            total = sim + reg_fac * reg
            total.backward()
            if history is not None:
                history.append(float(total.detach()))
            opt.step()
    if timings is not None:
        synchronize(dev)
        timings["steps_s"] = timings.get("steps_s", 0.0) + time.perf_counter() - t0
    out = F.interpolate(
        smooth.detach() * gs, size=tuple(big), mode="trilinear", align_corners=False
    )
    return (avg3(out, 3) / hr_scale).flip(1)
