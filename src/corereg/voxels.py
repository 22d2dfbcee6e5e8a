"""Voxel-grid helpers shared by every layer above them (data generation, training,
evaluation): the identity sampling grid and the mean Dice of a label pair."""

from __future__ import annotations

import numpy as np


def identity_grid(shape) -> np.ndarray:
    """(3, *shape) voxel coordinates of every voxel (index order), as float32."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))


def dice_mean(fixed_lab, warped_lab, labels) -> float:
    """Mean Dice over ``labels`` present in the fixed map (NumPy arrays or torch tensors);
    NaN when none is present.  The quick score of training-time validation."""
    vals = []
    for lab in labels:
        a, b = fixed_lab == lab, warped_lab == lab
        if a.any():
            vals.append(float(2 * (a & b).sum() / (a.sum() + b.sum())))
    return float(np.mean(vals)) if vals else float("nan")


# The engine halves its images three times (feature strides and the half-resolution fields).
ENGINE_SIZE_MULTIPLE = 8


def check_size_multiple(shape, multiple: int, where: str, who: str = "the engine") -> None:
    """One CoreregError when an image size is not a multiple of what ``who`` needs."""
    from corereg.errors import CoreregError

    if any(int(n) % multiple for n in shape):
        raise CoreregError(
            f"{where}: {who} needs image sizes divisible by {multiple}, got {tuple(shape)}"
        )
