"""A fused trilinear warp + squared-difference loss for Adam instance optimisation.

``warp_ssd(feat_mov, feat_fix, grid)`` equals
``((grid_sample(feat_mov, grid, bilinear, zeros, align_corners=False) - feat_fix)**2).mean(1).mean()``
and its gradient with respect to ``grid``, computed in one pass over channels-last
features: per voxel, the 8 corner vectors are gathered once and give both the
interpolated value (Σ_k w_k v_k) and the gradient (Σ_k ∂w_k/∂x · ⟨r, v_k⟩, r the
residual), instead of grid_sample's generic 3-D kernel and its separate backward.
The features get no gradient (they are constants of the instance optimisation).
"""

from __future__ import annotations

import torch

CHUNK = 1 << 14


def _corners(grid: torch.Tensor, shape):
    """Voxel coordinates (align_corners=False) of normalised grid points, (N, 3) in (a0, a1, a2)."""
    h, w, d = shape
    size = torch.tensor([d, w, h], device=grid.device, dtype=grid.dtype)
    pos = ((grid + 1) * size - 1) / 2  # (N, 3) as (x -> a2, y -> a1, z -> a0)
    return pos.flip(-1)


class _WarpSSD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grid, mov_cl, fix_cl, shape):
        h, w, d = shape
        n_vox = fix_cl.shape[0]
        pos = _corners(grid.reshape(-1, 3), shape)
        grad = torch.empty_like(pos)
        total = pos.new_zeros(())
        offs = torch.tensor(
            [[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], device=pos.device
        )
        strides = torch.tensor([w * d, d, 1], device=pos.device)
        upper = torch.tensor([h, w, d], device=pos.device)
        sign = (2 * offs - 1).to(pos.dtype)  # d w_k / d pos per axis: -1 lower corner, +1 upper
        for s in range(0, n_vox, CHUNK):
            p = pos[s : s + CHUNK]
            base = torch.floor(p)
            frac = p - base
            idx = base.long().unsqueeze(1) + offs  # (n, 8, 3)
            inside = ((idx >= 0) & (idx < upper)).all(-1)  # (n, 8)
            flat = (idx.clamp(min=0) * strides).sum(-1).clamp(max=h * w * d - 1)
            vals = torch.index_select(mov_cl, 0, flat.reshape(-1)).view(
                *flat.shape, -1
            )  # (n, 8, C)
            # per-axis weights (1 - f, f) and their derivatives (-1, +1)
            fw = torch.stack([1 - frac, frac], 1)  # (n, 2, 3)
            w0, w1, w2 = (
                fw[:, :, 0][:, offs[:, 0]],
                fw[:, :, 1][:, offs[:, 1]],
                fw[:, :, 2][:, offs[:, 2]],
            )
            wk = w0 * w1 * w2 * inside
            warped = torch.bmm(wk.unsqueeze(1), vals).squeeze(1)  # (n, C)
            r = warped - fix_cl[s : s + CHUNK]
            total = total + r.pow(2).sum()
            dots = torch.bmm(vals, r.unsqueeze(-1)).squeeze(-1) * inside  # <v_k, r>
            g0 = (sign[:, 0] * w1 * w2 * dots).sum(1)
            g1 = (sign[:, 1] * w0 * w2 * dots).sum(1)
            g2 = (sign[:, 2] * w0 * w1 * dots).sum(1)
            grad[s : s + CHUNK] = torch.stack([g0, g1, g2], 1)
        c = fix_cl.shape[1]
        scale = 1.0 / (c * n_vox)
        # d loss / d pos (array order) -> d loss / d grid (x, y, z): pos_a = ((g + 1) n_a - 1) / 2
        size = torch.tensor([h, w, d], device=pos.device, dtype=pos.dtype)
        ggrid = (2 * scale * grad * size / 2).flip(-1).reshape(grid.shape)
        ctx.save_for_backward(ggrid)
        return total * scale

    @staticmethod
    def backward(ctx, grad_out):
        (ggrid,) = ctx.saved_tensors
        return grad_out * ggrid, None, None, None


def channels_last(feat: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w, d) -> (h*w*d, C) contiguous."""
    return feat[0].permute(1, 2, 3, 0).reshape(-1, feat.shape[1]).contiguous()


def warp_ssd(mov_cl: torch.Tensor, fix_cl: torch.Tensor, grid: torch.Tensor, shape) -> torch.Tensor:
    return _WarpSSD.apply(grid, mov_cl, fix_cl, tuple(shape))
