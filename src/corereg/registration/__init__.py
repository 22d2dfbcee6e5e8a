"""Registration methods behind one interface, and registration of a manifest's test pairs.

A method maps (fixed HU, moving HU) on the same grid to a Learn2Reg field
(H, W, D, 3) in voxel units of the fixed grid.  New methods register a class in
``METHODS`` under their ``kind`` (the ``kind`` key of a method in config.yaml).
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
from corereg.registration.methods import METHODS, Method

# Method names of config.yaml accepted by `corereg register --method` in place of their kind.
ALIASES = {"bigalke": "engine", "bigalke_original": "engine", "core": "engine"}


def make_method(
    kind: str, params: dict, device: torch.device, checkpoint=None, seed: int = 0
) -> Method:
    kind = ALIASES.get(kind, kind)
    if kind in BASELINES:
        import importlib

        module, name = BASELINES[kind].split(":")
        METHODS[kind] = getattr(importlib.import_module(module), name)
    if kind not in METHODS:
        if kind in PLANNED:
            raise NotImplementedYet(f"registration method kind '{kind}' ({PLANNED[kind]})")
        raise CoreregError(f"unknown method kind '{kind}'; known: {sorted(METHODS)}")
    cls = METHODS[kind]
    if cls.needs_checkpoint and checkpoint is None:
        raise CoreregError(f"method kind '{kind}' needs --checkpoint (a trained model)")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise InputError(checkpoint, "checkpoint file does not exist")
    return cls(params=params, device=device, checkpoint=checkpoint, seed=seed)


# Table 1 adapters (corereg.baselines), imported when used.
BASELINES = {
    "niftyreg": "corereg.baselines.niftyreg:NiftyReg",
    "deeds": "corereg.baselines.deeds:Deeds",
    "voxelmorph": "corereg.baselines.learned:VoxelMorph",
    "lapirn": "corereg.baselines.learned:LapIRNMethod",
    "unigradicon": "corereg.baselines.unigradicon:UniGradICON",
}

# Kinds declared in config.yaml whose adapters come with later issues.
PLANNED = {
    "samconvex": "Table 1 baseline adapter",
}


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
