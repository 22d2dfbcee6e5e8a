"""Registration methods behind one interface, and registration of a manifest's test pairs.

A method maps (fixed HU, moving HU) on the same grid to a Learn2Reg field
(H, W, D, 3) in voxel units of the fixed grid.  The kinds and their classes are
listed in :mod:`corereg.registration.registry`.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from corereg.device import describe, resolve_device, seed_everything, synchronize
from corereg.errors import CoreregError, InputError, NotImplementedYet
from corereg.registration.methods import Method
from corereg.registration.registry import KINDS, WITHOUT_ADAPTER, method_class


def make_method(
    kind: str, params: dict, device: torch.device, checkpoint=None, seed: int = 0
) -> Method:
    """A method of registry ``kind`` (see :mod:`corereg.registration.registry`)."""
    if kind not in KINDS:
        if kind in WITHOUT_ADAPTER:
            raise NotImplementedYet(f"registration method kind '{kind}' ({WITHOUT_ADAPTER[kind]})")
        raise CoreregError(f"unknown method kind '{kind}'; known: {', '.join(KINDS)}")
    cls = method_class(kind)
    if cls.needs_checkpoint and checkpoint is None:
        raise CoreregError(f"method kind '{kind}' needs --checkpoint (a trained model)")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise InputError(checkpoint, "checkpoint file does not exist")
    return cls(params=params, device=device, checkpoint=checkpoint, seed=seed)


def timed_register(
    method: Method, fixed: np.ndarray, moving: np.ndarray
) -> tuple[np.ndarray, float]:
    synchronize(method.device)
    t0 = time.perf_counter()
    disp = method.register(fixed, moving)
    synchronize(method.device)
    return disp, time.perf_counter() - t0


def check_pair(fixed_path, fixed, moving_path, moving) -> None:
    if fixed.shape != moving.shape:
        raise InputError(
            moving_path,
            f"shape {moving.shape} differs from the fixed image {fixed_path} {fixed.shape}",
        )


def register_manifest(
    manifest, method: Method, out_dir: Path, split: str = "test", warmup=True
) -> pd.DataFrame:
    """Register every pair of ``split``; write fields into ``out_dir``; return the timing table."""
    from corereg.data.manifest import field_name
    from corereg.io import save_field

    pairs = manifest.pairs(split)
    if not pairs:
        raise InputError(manifest.path, f"no '{split}' pairs to register")

    image = functools.lru_cache(maxsize=4)(manifest.load_image)  # pairs share cases; bounded memory

    def load(p):
        fixed, affine = image(p["fixed"])
        moving, _ = image(p["moving"])
        return fixed.copy(), moving.copy(), affine  # copies: a method may write into its inputs

    def save(p, disp, affine):
        save_field(out_dir / field_name(p["fixed"], p["moving"]), disp, affine)

    seed_everything(method.seed)
    rows = method.register_set(pairs, load, save, warmup=warmup)
    return pd.DataFrame(rows).assign(device=describe(method.device))


__all__ = [
    "METHODS",
    "Method",
    "make_method",
    "register_manifest",
    "resolve_device",
    "timed_register",
]
