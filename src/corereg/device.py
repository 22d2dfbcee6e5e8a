"""Device selection and determinism: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import random

import numpy as np
import torch

from corereg.errors import CoreregError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU; ``cuda``: a GPU; ``cuda:N``: that one.
    Where a job sees several GPUs (a workstation; a scheduler that assigns one GPU per job
    makes the job see only that one), ``auto`` and ``cuda`` claim a GPU no other corereg
    job on the machine holds (:func:`claim_gpu`)."""
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if name in ("auto", "cuda"):
        if not torch.cuda.is_available():
            raise CoreregError("device 'cuda' requested but CUDA is not available on this machine")
        count = torch.cuda.device_count()
        return torch.device("cuda", claim_gpu(count) if count > 1 else 0)
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CoreregError(f"device '{name}' requested but CUDA is not available on this machine")
    return dev


GPU_LOCKS_ENV = "COREREG_GPU_LOCKS"  # folder of the per-GPU lock files
_held: list = []  # the lock file this process holds (released when the process ends)


def claim_gpu(count: int, folder=None) -> int:
    """The index of a GPU that no other corereg process on this machine holds: the first
    free one, held by an exclusive lock on ``<folder>/gpu<i>.lock`` until this process
    ends.  With every GPU held (more concurrent GPU jobs than GPUs: cap them with
    ``snakemake --resources gpu=N``) the job shares one, and says so."""
    import fcntl
    import os
    import tempfile
    from pathlib import Path

    if _held:
        return _held[0][1]
    base = folder or os.environ.get(GPU_LOCKS_ENV)
    base = Path(base or Path(tempfile.gettempdir()) / f"corereg-gpus-{os.getuid()}")
    base.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        fh = open(base / f"gpu{i}.lock", "a+")  # held for the process's life
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            continue
        fh.truncate(0)
        fh.write(str(os.getpid()))
        fh.flush()
        _held.append((fh, i))
        return i
    shared = os.getpid() % count
    print(
        f"[device] all {count} GPUs are held by other corereg jobs; sharing cuda:{shared} "
        "(cap concurrent GPU jobs with snakemake --resources gpu=N)",
        flush=True,
    )
    return shared


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
