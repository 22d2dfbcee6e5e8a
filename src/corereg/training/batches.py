"""Where a training's scans live while it runs, and how a batch reaches the device.

``placement``:

- ``device``: every training and validation scan is read once and kept on the device
  (the GPU, as the released code does, or the CPU's memory): no reading per batch, but
  memory in proportion to the dataset;
- ``cache``: scans are read from the uncompressed scan cache
  (:mod:`corereg.data.scan_cache`) when a batch needs them; a background thread reads
  the next batch while the current one trains (into pinned memory on CUDA), so memory
  stays at a few scans whatever the dataset's size.

``training_data.on_device`` chooses: ``true`` / ``false``, or ``auto``: ``device`` on
CUDA when the scans take at most ``device_share`` of the free GPU memory, ``cache``
otherwise (and always on the CPU).  Either way the network sees the same arrays, so the
numbers do not depend on the placement.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from corereg.data.scan_cache import ScanCache
from corereg.errors import CoreregError


@dataclass(frozen=True)
class DataPlacement:
    """The job's ``training_data`` settings (not training parameters: they change where the
    data live, not a number, so a training's identity does not include them)."""

    on_device: str | bool = "auto"
    device_share: float = 0.5
    cache_dir: str = ""

    def __post_init__(self):
        if self.on_device not in ("auto", True, False):
            raise CoreregError(f"on_device must be auto, true or false, not {self.on_device!r}")
        if not 0 < self.device_share <= 1:
            raise CoreregError(f"device_share must lie in (0, 1], not {self.device_share}")


def choose_placement(setting: DataPlacement, device: torch.device, nbytes: int) -> str:
    """``device`` or ``cache`` for scans of ``nbytes`` in total (see the module's text)."""
    if setting.on_device is True:
        return "device"
    if setting.on_device is False or device.type != "cuda":
        return "cache"
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if nbytes <= setting.device_share * free else "cache"


class Scans:
    """``image(id)`` (1×1×H×W×D, float32 HU) and ``labels(id)`` (1×1×H×W×D, int64) on
    ``device``; ``prefetch(ids)`` starts reading the images of the next batch."""

    def __init__(self, cache: ScanCache, image_ids, label_ids, device, placement: str, clock=None):
        self.cache, self.device, self.placement = cache, torch.device(device), placement
        self.clock = clock
        cache.ensure(image_ids, label_ids)
        freed = cache.prune()
        if freed:
            print(
                f"[data] scan cache: removed {freed / 1e9:.2f} GB of cases no longer in the dataset"
            )
        self._images: dict[str, torch.Tensor] = {}
        self._labels: dict[str, torch.Tensor] = {}
        self._pending: dict[str, Future] = {}
        self._pool: ThreadPoolExecutor | None = None
        if placement == "device":
            self._images = {i: self._read_image(i).to(self.device) for i in image_ids}
            self._labels = {i: self._read_labels(i).to(self.device) for i in label_ids}

    # -- reading ------------------------------------------------------------------------
    def _pin(self, t: torch.Tensor) -> torch.Tensor:
        return t.pin_memory() if self.device.type == "cuda" else t

    def _read_image(self, case_id: str) -> torch.Tensor:
        return torch.from_numpy(self.cache.image(case_id))[None, None]

    def _read_labels(self, case_id: str) -> torch.Tensor:
        lab = self.cache.labels(case_id).astype(np.int64)
        return torch.from_numpy(lab)[None, None]

    def _take(self, key, read):
        """``read()`` of ``key``: the background result when it was prefetched."""
        future = self._pending.pop(key, None)
        if self.clock is None:
            return future.result() if future else read()
        with self.clock("data_wait"):  # the time the step waits for its data
            return future.result() if future else read()

    def image(self, case_id: str) -> torch.Tensor:
        if case_id in self._images:
            return self._images[case_id]
        t = self._take(("image", case_id), lambda: self._read_image(case_id))
        return t.to(self.device, non_blocking=True)

    def labels(self, case_id: str) -> torch.Tensor:
        if case_id in self._labels:
            return self._labels[case_id]
        return self._read_labels(case_id).to(self.device)

    def extra(self, key, read) -> torch.Tensor:
        """Another per-batch tensor (a pseudo-label), prefetched like the scans."""
        return self._take(("extra", key), read).to(self.device, non_blocking=True)

    def prefetch(self, case_ids, extras=()) -> None:
        """Start reading ``case_ids`` (and ``extras``: (key, read) pairs) in the background;
        nothing to do for scans that are resident."""
        jobs = [(("extra", key), read) for key, read in extras]
        if self.placement != "device":
            jobs += [(("image", i), (lambda i=i: self._read_image(i))) for i in case_ids]
        if not jobs:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches")
        for key, read in jobs:
            if key not in self._pending:
                self._pending[key] = self._pool.submit(lambda r=read: self._pin(r()))

    def close(self) -> None:
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
