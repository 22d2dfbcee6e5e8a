"""Affine augmentation of a training pair and its pseudo-label (docs/method.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from corereg.registration.fields import identity_grid


@dataclass
class Affines:
    a1: torch.Tensor  # (4, 4) acting on homogeneous normalised (x, y, z, 1)
    a2: torch.Tensor


def draw_affines(strength: float, generator: torch.Generator) -> Affines:
    """A1 = I + 1.5 s N(0,1), A2 = (I + s N(0,1)) A1, bottom rows' first three entries zeroed."""
    eye = torch.eye(4, dtype=torch.float64, device="cpu")
    a1 = (
        eye
        + torch.randn(4, 4, generator=generator, dtype=torch.float64, device="cpu") * strength * 1.5
    )
    a1[3, :3] = 0
    a2r = eye + torch.randn(4, 4, generator=generator, dtype=torch.float64, device="cpu") * strength
    a2r[3, :3] = 0
    return Affines(a1, a2r @ a1)


def affine_grid(matrix: torch.Tensor, shape, device) -> torch.Tensor:
    return F.affine_grid(
        matrix[:3].float().unsqueeze(0).to(device), (1, 1, *shape), align_corners=False
    )


def augment_image(image: torch.Tensor, grid: torch.Tensor, pad: str = "minimum") -> torch.Tensor:
    """Resample (1, 1, H, W, D) at ``grid``; outside voxels get the image minimum or 0."""
    if pad == "minimum":
        lo = image.min()
        return F.grid_sample(image - lo, grid, align_corners=False) + lo
    if pad == "zero":
        return F.grid_sample(image, grid, align_corners=False)
    raise ValueError(f"pad must be 'minimum' or 'zero', not '{pad}'")


def adjust_label_code(label: torch.Tensor, aff: Affines, full_shape) -> torch.Tensor:
    """The code's label: x + v(x) = A12 x + û_s(A12 x), A12 = expm(logm A1 − logm A2),
    û_s = ↑4(↓½(û)) (smoothing through quarter resolution); returns half resolution."""
    dev = label.device
    smooth = F.interpolate(
        F.interpolate(label, scale_factor=0.5, mode="trilinear", align_corners=False),
        scale_factor=4,
        mode="trilinear",
        align_corners=False,
    )
    l1 = scipy.linalg.logm(aff.a1.numpy())
    l2 = scipy.linalg.logm(aff.a2.numpy())
    a12 = torch.from_numpy(np.real(scipy.linalg.expm(l1 - l2)))
    g12 = affine_grid(a12, full_shape, dev)
    g0 = identity_grid(full_shape, dev)
    full = F.grid_sample(smooth, g12, align_corners=False) + (g12 - g0).permute(0, 4, 1, 2, 3)
    return F.interpolate(full, scale_factor=0.5, mode="trilinear", align_corners=False)


def adjust_label_exact(label: torch.Tensor, aff: Affines) -> torch.Tensor:
    """Exact label on the label's own grid: x + v(x) = A2⁻¹ (A1 x + û(A1 x))."""
    shape = label.shape[2:]
    dev = label.device
    g0 = identity_grid(shape, dev)  # (1, h, w, d, 3) as (x, y, z)
    g1 = affine_grid(aff.a1, shape, dev)  # A1 x
    u_at = F.grid_sample(label, g1, mode="bilinear", padding_mode="border", align_corners=False)
    pts = g1 + u_at.permute(0, 2, 3, 4, 1)  # A1 x + û(A1 x)
    # The image grid uses only the top 3x4 block y = M x + t (A2[3, 3] is perturbed but unused),
    # so the inverse is M^-1 (y - t), not the top of the 4x4 inverse.
    m_inv = torch.linalg.inv(aff.a2[:3, :3]).float().to(dev)
    t = aff.a2[:3, 3].float().to(dev)
    mapped = (pts - t) @ m_inv.T
    return (mapped - g0).permute(0, 4, 1, 2, 3)


def augment_pair(
    fixed,
    moving,
    label,
    strength,
    generator,
    composition="code",
    pad="minimum",
    return_affines=False,
):
    """Augmented (fixed, moving, label[, affines]); images (1, 1, H, W, D), label (1, 3, H/2, W/2, D/2)."""
    full_shape = fixed.shape[2:]
    aff = draw_affines(strength, generator)
    dev = fixed.device
    f = augment_image(fixed, affine_grid(aff.a1, full_shape, dev), pad)
    m = augment_image(moving, affine_grid(aff.a2, full_shape, dev), pad)
    if composition == "code":
        lab = adjust_label_code(label, aff, full_shape)
    elif composition == "exact":
        lab = adjust_label_exact(label, aff)
    else:
        raise ValueError(f"aug_label_composition must be 'code' or 'exact', not '{composition}'")
    return (f, m, lab, aff) if return_affines else (f, m, lab)
