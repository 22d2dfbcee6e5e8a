"""Uncompressed copies of a prepared dataset's scans, read one batch at a time.

Prepared scans are ``.nii.gz``: decompressing the scans of a batch costs seconds of
CPU, and holding every training scan decompressed costs memory in proportion to the
dataset (58.7 MB per RAD-ChestCT scan).  A training therefore reads its scans from a
cache of ``.npy`` files, written once from the prepared NIfTI files (the same
arrays, bit for bit, that :meth:`Manifest.load_image` and :meth:`Manifest.load_labels`
return) and read whole per batch from the page cache.

Each entry records the size and modification time of the NIfTI file it was made
from; an entry whose source changed (the dataset was prepared again) is rebuilt, never
used.  Entries are built under a per-entry lock, so trainings that start together on
the same dataset build each entry once.

Where the cache lives: beside the prepared dataset unless the training says otherwise
(``training_data.cache_dir``: a folder, which may name environment variables such as
``$TMPDIR`` for a node's local scratch).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from pathlib import Path

import numpy as np

from corereg.data.manifest import Manifest
from corereg.errors import InputError

FORMAT = "corereg-scan-cache/1"


def cache_folder(manifest: Manifest, where: str | None = None) -> Path:
    """The cache folder of ``manifest``'s dataset: below ``where`` (environment variables
    expanded; default: a folder ``cache`` beside the prepared dataset, which in the
    workflow is ``<data_root>/<dataset>/cache``), in a folder named after the dataset and
    the manifest's location, so datasets never share entries."""
    import hashlib

    if where:
        base = Path(os.path.expandvars(os.path.expanduser(where)))
        if "$" in str(base):
            raise InputError(where, "cache folder names an environment variable that is not set")
    else:
        base = manifest.root.parent / "cache"
    tag = hashlib.sha256(str(manifest.path.resolve()).encode()).hexdigest()[:8]
    return base / f"{manifest.dataset}-{tag}"


class ScanCache:
    """``image(id)`` (float32, HU) and ``labels(id)`` (uint8) of the cases of ``manifest``,
    read from ``.npy`` copies in :func:`cache_folder`; :meth:`ensure` builds the entries."""

    def __init__(self, manifest: Manifest, where: str | None = None):
        self.manifest = manifest
        self.folder = cache_folder(manifest, where)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                self.folder, f"scan cache folder cannot be made ({exc.strerror})"
            ) from None

    # -- entries ------------------------------------------------------------------
    def _entry(self, case_id: str, kind: str) -> Path:
        return self.folder / f"{case_id}.{kind}.npy"

    def _source(self, case_id: str, kind: str) -> Path:
        return (
            self.manifest.image_path(case_id)
            if kind == "image"
            else self.manifest.label_path(case_id)
        )

    def _stamp(self, case_id: str, kind: str) -> dict:
        src = self._source(case_id, kind)
        try:
            st = src.stat()
        except FileNotFoundError:
            raise InputError(src, "is listed in the manifest but does not exist") from None
        return {
            "format": FORMAT,
            "source": str(src.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "shape": list(self.manifest.shape),
            "spacing": list(self.manifest.spacing),
            "intensity": self.manifest.meta.get("intensity", "HU") if kind == "image" else None,
        }

    def fresh(self, case_id: str, kind: str) -> bool:
        """Whether the entry exists and was made from the source file as it is now."""
        entry, meta = self._entry(case_id, kind), self._entry(case_id, kind).with_suffix(".json")
        if not entry.is_file() or not meta.is_file():
            return False
        try:
            return json.loads(meta.read_text()) == self._stamp(case_id, kind)
        except (OSError, ValueError):
            return False

    @contextlib.contextmanager
    def _locked(self, case_id: str, kind: str):
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f".{case_id}.{kind}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _build(self, case_id: str, kind: str) -> bool:
        """Write the entry if it is missing or stale; True if it was (re)built."""
        if self.fresh(case_id, kind):
            return False
        with self._locked(case_id, kind):
            if self.fresh(case_id, kind):  # another job built it while this one waited
                return False
            stamp = self._stamp(case_id, kind)
            if kind == "image":
                data = self.manifest.load_image(case_id)[0]
            else:
                data = self.manifest.load_labels(case_id)
            entry = self._entry(case_id, kind)
            meta = entry.with_suffix(".json")
            meta.unlink(missing_ok=True)  # no stamp while the entry is being replaced
            tmp = entry.with_name(f".{entry.name}.{os.getpid()}.part")
            try:
                with open(tmp, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(data))
                os.replace(tmp, entry)
            finally:
                tmp.unlink(missing_ok=True)
            tmp_meta = meta.with_name(f".{meta.name}.{os.getpid()}.part")
            tmp_meta.write_text(json.dumps(stamp))
            os.replace(tmp_meta, meta)
            return True

    def ensure(self, images, labels=()) -> int:
        """Build the missing or stale entries of the cases ``images`` (and the label maps
        of ``labels``); returns how many were (re)built."""
        built = 0
        for case_id in images:
            built += self._build(case_id, "image")
        for case_id in labels:
            built += self._build(case_id, "labels")
        return built

    def prune(self) -> int:
        """Remove the entries (and their stamps and locks) of cases the manifest no longer
        lists, as after a dataset was prepared again without them; returns the bytes freed.
        No training on this manifest can be reading them: it lists the same cases."""
        keep = {c["id"] for c in self.manifest.cases()}
        entry = re.compile(r"^\.?(?P<id>.+)\.(?:image|labels)\.(?:npy|json|lock)$")
        freed = 0
        for f in self.folder.iterdir():
            m = entry.match(f.name)
            if m and m["id"] not in keep and f.is_file():
                freed += f.stat().st_size
                f.unlink(missing_ok=True)
        return freed

    # -- reading --------------------------------------------------------------------
    def _read(self, case_id: str, kind: str) -> np.ndarray:
        entry = self._entry(case_id, kind)
        try:
            return np.load(entry, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(entry, f"cache entry cannot be read ({exc}); delete it") from None

    def image(self, case_id: str) -> np.ndarray:
        return self._read(case_id, "image")

    def labels(self, case_id: str) -> np.ndarray:
        return self._read(case_id, "labels")

    def nbytes(self, n_images: int, n_labels: int = 0) -> int:
        """Bytes that ``n_images`` scans and ``n_labels`` label maps take in the cache."""
        voxels = int(np.prod(self.manifest.shape))
        return voxels * (4 * n_images + n_labels)
