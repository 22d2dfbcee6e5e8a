"""Registration methods behind one interface, and registration of a manifest's test pairs.

A method maps (fixed HU, moving HU) on the same grid to a Learn2Reg field
(H, W, D, 3) in voxel units of the fixed grid.  Each method kind's adapter
(:mod:`corereg.adapters.method_kinds`) names its class and makes it.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import pandas as pd

from corereg.device import describe, resolve_device, seed_everything, synchronize
from corereg.errors import CoreregError, InputError
from corereg.registration.methods import Method


def timed_register(
    method: Method, fixed: np.ndarray, moving: np.ndarray
) -> tuple[np.ndarray, float]:
    synchronize(method.device)
    t0 = time.perf_counter()
    disp = method.register(fixed, moving)
    synchronize(method.device)
    return disp, time.perf_counter() - t0


def check_pair(
    fixed_path, fixed, moving_path, moving, fixed_affine=None, moving_affine=None
) -> None:
    """Refuse a pair that cannot be registered in voxel space: different shapes, voxel
    spacings or axis orientations, or a constant image.  A different origin is normal
    for inter-patient pairs (the Learn2Reg convention) and allowed."""
    import nibabel as nib

    from corereg.io import SPACING_TOL, spacing_of

    if fixed.shape != moving.shape:
        raise InputError(
            moving_path,
            f"shape {moving.shape} differs from the fixed image {fixed_path} {fixed.shape}",
        )
    if fixed_affine is not None and moving_affine is not None:
        sf, sm = spacing_of(fixed_affine), spacing_of(moving_affine)
        if any(abs(a - b) > SPACING_TOL * max(1.0, b) for a, b in zip(sm, sf, strict=True)):
            raise InputError(
                moving_path,
                f"voxel spacing {tuple(round(v, 4) for v in sm)} mm differs "
                f"from the fixed image's {tuple(round(v, 4) for v in sf)} mm; "
                "resample both to one grid first",
            )
        of, om = nib.aff2axcodes(fixed_affine), nib.aff2axcodes(moving_affine)
        if of != om:
            raise InputError(
                moving_path,
                f"axis orientation {''.join(om)} differs from the fixed "
                f"image's {''.join(of)}; reorient both to one orientation first",
            )
    for path, img in ((fixed_path, fixed), (moving_path, moving)):
        check_not_constant(path, img)


def check_not_constant(path, image: np.ndarray) -> None:
    lo, hi = float(image.min()), float(image.max())
    if lo == hi:
        raise InputError(
            path, f"image is constant (every voxel {lo:g}): there is nothing to register"
        )


def check_field(where: str, disp: np.ndarray, shape) -> np.ndarray:
    """A method's field before it is written: (H, W, D, 3) on the fixed grid, finite."""
    disp = np.asarray(disp)
    if disp.shape != (*tuple(shape), 3):
        raise CoreregError(
            f"{where}: the method returned a field of shape {disp.shape}, "
            f"not {(*tuple(shape), 3)}; nothing was written"
        )
    bad = int((~np.isfinite(disp)).sum())
    if bad:
        raise CoreregError(
            f"{where}: the method returned a field with {bad} NaN or infinite "
            "values; nothing was written"
        )
    return disp


def register_manifest(
    manifest,
    method: Method,
    out_dir: Path,
    split: str = "test",
    warmup=True,
    field_storage: str = "float32",
) -> pd.DataFrame:
    """Register every pair of ``split``; write fields into ``out_dir`` (as ``field_storage``,
    see :func:`corereg.io.save_field`); return the timing table."""
    from corereg.data.manifest import field_name
    from corereg.io import save_field

    pairs = manifest.pairs(split)
    if not pairs:
        raise InputError(manifest.path, f"no '{split}' pairs to register")

    image = functools.lru_cache(maxsize=4)(manifest.load_image)  # pairs share cases; bounded memory

    def load(p):
        fixed, affine = image(p["fixed"])
        moving, _ = image(p["moving"])
        check_not_constant(manifest.image_path(p["fixed"]), fixed)
        check_not_constant(manifest.image_path(p["moving"]), moving)
        return fixed.copy(), moving.copy(), affine  # copies: a method may write into its inputs

    def save(p, disp, affine):
        where = f"{method.kind}, pair {p['fixed']} <- {p['moving']}"
        check_field(where, disp, manifest.shape)
        save_field(out_dir / field_name(p["fixed"], p["moving"]), disp, affine, field_storage)

    seed_everything(method.seed)
    rows = method.register_set(pairs, load, save, warmup=warmup)
    return pd.DataFrame(rows).assign(device=describe(method.device))


__all__ = [
    "Method",
    "check_field",
    "check_pair",
    "register_manifest",
    "resolve_device",
    "timed_register",
]
