"""Device selection and determinism: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import random

import numpy as np
import torch

from corereg.errors import CoreregError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CoreregError(f"device '{name}' requested but CUDA is not available on this machine")
    return dev


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()}threads"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds third-party code that uses the legacy API
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


# Mixed precision.  The released code runs its networks under CUDA autocast (float16);
# on the CPU AMP is off.  AMP_CPU_DTYPE = torch.bfloat16 turns the same autocast scopes
# on for the CPU, so that tests run the AMP branches (scopes, gradient scaler) there.
AMP_CPU_DTYPE: torch.dtype | None = None


def amp_active(device: torch.device, requested: bool) -> bool:
    """Whether AMP runs on ``device`` when the configuration asks for it (engine.amp)."""
    return bool(requested) and (device.type == "cuda" or AMP_CPU_DTYPE is not None)


def amp_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else (AMP_CPU_DTYPE or torch.bfloat16)


def warm_up(device: torch.device, warmup: bool | str) -> bool:
    """Whether a registration run makes one untimed pass first: on CUDA (context creation
    and kernel selection would otherwise be timed), or always with ``warmup='always'``."""
    return warmup == "always" or (bool(warmup) and device.type == "cuda")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
