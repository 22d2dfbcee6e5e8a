"""One stage's pseudo-labels on disk: a ``.npy`` file written pair by pair, read pair by pair.

The pseudo-labels of a stage are one half-resolution field per training pair (22 MB
each at the RAD-ChestCT geometry, float32; 300 pairs are 6.6 GB).  They are written to
``labels_stage<k>.npy`` in the model folder as each pair's label is computed and read
back one batch at a time, so a training holds no more of them than a batch needs.  The
values are the computed ones, bit for bit (same dtype, no compression).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from corereg.errors import InputError


class LabelFile:
    """``labels[k : k + 1]`` (a tensor, 1×3×h×w×d) of the pseudo-label file ``path``."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(
                self.path,
                "pseudo-label file of the checkpoint is missing; delete checkpoint.pt beside "
                "it to start the training over",
            )
        arr = np.load(self.path, mmap_mode="r")
        self.shape, self.dtype = arr.shape, arr.dtype
        del arr

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, sl: slice) -> torch.Tensor:
        arr = np.load(self.path, mmap_mode="r")
        out = torch.from_numpy(np.array(arr[sl]))
        del arr  # unmaps: the pages read stay in the page cache, not in this process
        return out


class LabelWriter:
    """Write a stage's labels one pair at a time; :meth:`close` puts the file in place
    (until then it is a ``.part`` file, so a killed refresh leaves no half file)."""

    def __init__(self, path, n: int):
        self.path, self.n = Path(path), int(n)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        self.fh = None
        self.count = 0

    def append(self, label: torch.Tensor) -> None:
        a = label.detach().cpu().contiguous().numpy()
        if self.fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(self.tmp, "wb")
            self.item_shape, self.dtype = a.shape[1:], a.dtype
            header = {"descr": np.lib.format.dtype_to_descr(a.dtype), "fortran_order": False}
            np.lib.format.write_array_header_1_0(
                self.fh, {**header, "shape": (self.n, *self.item_shape)}
            )
        if a.shape[1:] != self.item_shape or a.dtype != self.dtype:
            raise ValueError(f"label {self.count} has shape {a.shape} / {a.dtype}")
        self.fh.write(a.tobytes())
        self.count += a.shape[0]

    def close(self) -> LabelFile:
        if self.count != self.n:
            raise ValueError(f"{self.path}: {self.count} labels written, {self.n} expected")
        self.fh.close()
        os.replace(self.tmp, self.path)
        return LabelFile(self.path)

    def abort(self) -> None:
        if self.fh is not None:
            self.fh.close()
        self.tmp.unlink(missing_ok=True)
