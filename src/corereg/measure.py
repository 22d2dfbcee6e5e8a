"""Wall time and peak memory of a job's phases, written beside its outputs.

Training jobs write ``costs.json`` next to ``final.pt``: per phase (a training iteration,
a pseudo-label refresh, a validation) the total seconds, the number of calls and units
(pairs), and the first call on its own (it carries warm-up); and the job's peak memory:
resident set size, and on CUDA the allocator's peak (allocated and reserved).
``corereg costs`` turns these files, the registration times and Snakemake's benchmark
files of a run into the cost table that ``corereg plan`` and the rule resources use.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator

import torch


def _sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class PhaseClock:
    """``with clock("train_iteration"): ...`` adds the block's wall time to that phase.
    On CUDA the device is synchronised at both ends, so queued kernels count where they run."""

    def __init__(self, device=None) -> None:
        self.device = device
        self.phases: dict[str, dict] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, units: int = 1) -> Iterator[None]:
        _sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            _sync(self.device)
            self.add(name, time.perf_counter() - t0, units)

    def add(self, name: str, seconds: float, units: int = 1) -> None:
        ph = self.phases.setdefault(
            name, {"seconds": 0.0, "calls": 0, "units": 0, "first_s": seconds}
        )
        ph["seconds"] += seconds
        ph["calls"] += 1
        ph["units"] += units

    def summary(self) -> dict[str, dict]:
        """Per phase: totals, seconds per unit, and seconds per unit without the first call
        (``steady_s``; equal to ``per_unit_s`` when there was one call)."""
        out = {}
        for name, ph in self.phases.items():
            per_unit = ph["seconds"] / max(ph["units"], 1)
            rest_units = ph["units"] - ph["units"] / max(ph["calls"], 1)
            steady = (ph["seconds"] - ph["first_s"]) / rest_units if ph["calls"] > 1 else per_unit
            out[name] = {
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in ph.items()},
                "per_unit_s": round(per_unit, 4),
                "steady_s": round(steady, 4),
            }
        return out


def peak_memory(device=None) -> dict[str, float]:
    """Peak resident memory of this process in MB and, on CUDA, the allocator's peaks."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = rss_kb / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS
    out = {"rss_mb": round(rss_mb, 1)}
    if device is not None and torch.device(device).type == "cuda":
        out["cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["cuda_reserved_mb"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    return out


def costs_record(clock: PhaseClock, device, **extra) -> dict:
    from corereg.device import describe

    return {
        "device": describe(torch.device(device) if device is not None else torch.device("cpu")),
        "threads": torch.get_num_threads(),
        "phases": clock.summary(),
        "peak": peak_memory(device),
        **extra,
    }
