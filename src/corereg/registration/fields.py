"""Displacement fields in the engine's convention and conversions to Learn2Reg.

Engine convention (docs/method.md): a field is (B, 3, h, w, d) in normalised
``grid_sample`` coordinates with channels (x, y, z) = displacements along array
axes (a2, a1, a0), identity grid ``affine_grid(eye(3, 4))`` with
align_corners=False, and ``warp(I, u)(p) = I(p + u(p))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def identity_grid(shape, device=None, dtype=torch.float32, batch: int = 1) -> torch.Tensor:
    """(B, h, w, d, 3) identity sampling grid (align_corners=False)."""
    eye = torch.eye(3, 4, device=device, dtype=dtype).unsqueeze(0).expand(batch, 3, 4)
    return F.affine_grid(eye, (batch, 1, *shape), align_corners=False)


def warp(image: torch.Tensor, field: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Pull ``image`` (B, C, h, w, d) through ``field`` (B, 3, h, w, d); zeros outside."""
    grid = identity_grid(field.shape[2:], field.device, field.dtype, field.shape[0])
    return F.grid_sample(
        image,
        grid + field.permute(0, 2, 3, 4, 1),
        mode=mode,
        padding_mode="zeros",
        align_corners=False,
    )


def compose(first: torch.Tensor, second: torch.Tensor, order: str = "code") -> torch.Tensor:
    """Total field of warping with ``first`` and then warping the result with ``second``.

    ``exact``: u = second + first∘(id + second), what two sequential pulls produce.
    ``code``: u = first + second∘(id + first), the order of the CoRe/Bigalke code
    (docs/method.md, 'Paper and released code').
    """
    if order == "code":
        return first + warp(second, first)
    if order == "exact":
        return second + warp(first, second)
    raise ValueError(f"compose order must be 'code' or 'exact', not '{order}'")


def to_voxels(field: torch.Tensor) -> torch.Tensor:
    """Normalised (1, 3, H, W, D) field -> Learn2Reg (H, W, D, 3) voxel field."""
    h, w, d = field.shape[2:]
    f = field[0].flip(0)  # (a0, a1, a2) order
    scale = torch.tensor([h / 2.0, w / 2.0, d / 2.0], device=field.device, dtype=field.dtype)
    return (f * scale.view(3, 1, 1, 1)).permute(1, 2, 3, 0)


def from_voxels(disp: torch.Tensor) -> torch.Tensor:
    """Learn2Reg (H, W, D, 3) voxel field -> normalised (1, 3, H, W, D)."""
    h, w, d = disp.shape[:3]
    scale = torch.tensor([2.0 / h, 2.0 / w, 2.0 / d], device=disp.device, dtype=disp.dtype)
    return (disp * scale).permute(3, 0, 1, 2).flip(0).unsqueeze(0)


def avg3(x: torch.Tensor, times: int = 1) -> torch.Tensor:
    """``times`` successive 3x3x3 box filters (stride 1, zero padding counted)."""
    for _ in range(times):
        x = F.avg_pool3d(x, 3, stride=1, padding=1)
    return x
