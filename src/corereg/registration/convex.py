"""The differentiable optimiser H (docs/method.md): cost volume, coupled convex
optimisation with soft-argmin, inverse consistency and upsampling.

Displacements inside H are in array order (a0, a1, a2) and 1/8-grid voxels; H
returns a normalised (x, y, z) field (see ``fields``).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from corereg.params import EngineParams
from corereg.registration.fields import avg3, warp


def offsets(radius: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(L, 3) integer displacement labels o = (o_a0, o_a1, o_a2) in [-r, r]^3."""
    rng = range(-radius, radius + 1)
    return torch.tensor(list(itertools.product(rng, rng, rng)), device=device, dtype=dtype)


def cost_volume(feat_fix, feat_mov, radius=2, scale=5.0, cost="sad") -> torch.Tensor:
    """C_o(p) = box3( sum_c |s F_f(c, p) - s F_m(c, p + o)| ), moving zero-padded: (B, L, h, w, d).

    ``cost='correlation'`` uses the negative dot product instead of the SAD.
    """
    r = radius
    _, _, h, w, d = feat_fix.shape
    f = scale * feat_fix
    m = F.pad(scale * feat_mov, (r, r, r, r, r, r))
    costs = []
    for o0, o1, o2 in itertools.product(range(-r, r + 1), repeat=3):
        shifted = m[:, :, r + o0 : r + o0 + h, r + o1 : r + o1 + w, r + o2 : r + o2 + d]
        if cost == "sad":
            costs.append((f - shifted).abs().sum(1))
        elif cost == "correlation":
            costs.append(-(f * shifted).sum(1))
        else:
            raise ValueError(f"cost must be 'sad' or 'correlation', not '{cost}'")
    return F.avg_pool3d(torch.stack(costs, 1), 3, stride=1, padding=1)


def soft_argmin(cost: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Expected displacement under softmax(-beta * cost): (B, 3, h, w, d)."""
    prob = torch.softmax(-beta * cost, dim=1)
    return torch.einsum("bl...,lk->bk...", prob, labels)


def coupled_convex(cost, labels, beta=20.0, weights=(0.003, 0.03, 0.3)) -> torch.Tensor:
    """Soft-argmin, then for each coupling weight: couple to the smoothed estimate,
    soft-argmin again and apply a 3x3x3 mean filter."""
    u = soft_argmin(cost, labels, beta)
    lab = labels.view(1, -1, 3, *([1] * (cost.dim() - 2)))
    for lam in weights:
        dist = (lab - u.unsqueeze(1)).pow(2).sum(2)  # ||o - u(p)||^2, (B, L, h, w, d)
        u = avg3(soft_argmin(cost + lam * dist, labels, beta))
    return u


def inverse_consistency(fwd: torch.Tensor, bwd: torch.Tensor, iters: int = 15) -> torch.Tensor:
    """Symmetric fixed-point averaging of normalised fields (no gradient), returns forward."""
    with torch.no_grad():
        for _ in range(iters):
            fwd, bwd = 0.5 * (fwd - warp(bwd, fwd)), 0.5 * (bwd - warp(fwd, bwd))
    return fwd


def _half_grid_scale(shape, device, dtype) -> torch.Tensor:
    return torch.tensor([(n - 1) / 2.0 for n in shape], device=device, dtype=dtype).view(
        1, 3, 1, 1, 1
    )


def optimise(feat_fix, feat_mov, out_shape, ice: bool, p: EngineParams) -> torch.Tensor:
    """H: features at 1/8 -> normalised (x, y, z) field on ``out_shape``, in float32 even
    inside an autocast region (the soft-argmin over 125 labels is fragile in fp16)."""
    with torch.autocast(device_type=feat_fix.device.type, enabled=False):
        return _optimise(feat_fix.float(), feat_mov.float(), out_shape, ice, p)


def _optimise(feat_fix, feat_mov, out_shape, ice: bool, p: EngineParams) -> torch.Tensor:
    labels = offsets(p.disp_hw, feat_fix.device)
    kw = {"radius": p.disp_hw, "scale": p.feat_scale, "cost": p.cost}
    cc = {"beta": p.softargmin_beta, "weights": p.coupling_weights}
    u = coupled_convex(cost_volume(feat_fix, feat_mov, **kw), labels, **cc)
    scale = _half_grid_scale(u.shape[2:], u.device, u.dtype)
    u = (u / scale).flip(1)
    if ice:
        b = coupled_convex(cost_volume(feat_mov, feat_fix, **kw), labels, **cc)
        u = inverse_consistency(u, (b / scale).flip(1), p.ice_iters)
    u = avg3(F.interpolate(u, scale_factor=2, mode="trilinear", align_corners=False), 2)
    u = avg3(F.interpolate(u, scale_factor=2, mode="trilinear", align_corners=False), 2)
    if tuple(u.shape[2:]) != tuple(out_shape):
        u = F.interpolate(u, size=tuple(out_shape), mode="trilinear", align_corners=False)
    return u
