"""The dataset manifest: the contract between data preparation and every later step.

A prepared dataset is a folder::

    <prepared>/manifest.json
    <prepared>/imagesTr/<Name>_<id>_0000.nii.gz   (HU, float or int16)
    <prepared>/labelsTr/<Name>_<id>_0000.nii.gz   (uint8 label ids)

``manifest.json`` (format ``corereg-manifest/1``) lists the cases, the labels
and the registration pairs with their split, in the spirit of the Learn2Reg
``*_dataset.json``.  Pairs register ``moving`` onto ``fixed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corereg.errors import InputError
from corereg.io import load_image, load_labels, read_json, write_json

FORMAT = "corereg-manifest/1"
PAIR_SEP = "|"  # between the fixed and the moving id of a pair's key (ids may hold "_")
# The 13 AbdomenCTCT organs in the release's (BTCV) order; the abdomen-like phantoms use them too.
ABDOMEN_LABELS = {
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior vena cava",
    10: "portal vein and splenic vein",
    11: "pancreas",
    12: "right adrenal gland",
    13: "left adrenal gland",
}

REQUIRED = ("format", "dataset", "shape", "spacing", "labels", "cases", "pairs")


def write_manifest(
    root,
    dataset,
    name,
    source,
    shape,
    spacing,
    labels,
    cases,
    pairs,
    seed,
    orientation: str = "RAS",
    intensity="HU",
    **extra,
) -> None:
    """Write ``root/manifest.json``; ``extra`` keys (provenance) are stored beside the contract's."""
    for cid in (c["id"] for c in cases):
        if PAIR_SEP in str(cid):
            raise InputError(
                Path(root),
                f"case id '{cid}' holds '{PAIR_SEP}', which the tables put between "
                "the two scans of a pair: rename the case",
            )
    write_json(
        Path(root) / "manifest.json",
        {
            "format": FORMAT,
            "dataset": dataset,
            "name": name,
            "source": source,
            "seed": seed,
            "shape": list(shape),
            "spacing": list(spacing),
            "orientation": orientation,
            "intensity": intensity,
            "labels": {str(k): v for k, v in sorted(labels.items())},
            "cases": cases,
            "pairs": pairs,
            **extra,
        },
    )


def intensity_of(spec: dict):
    """The manifest's ``intensity`` entry for a dataset's ``intensity`` setting: "HU" (the
    scans are CT in Hounsfield units, used as they are) or a percentile normalisation that
    maps each scan's ``percentiles`` onto the HU-like range [-1000, 1000] when it is read."""
    setting = spec.get("intensity") or {}
    if setting.get("mode", "hu") == "hu":
        return "HU"
    lo, hi = setting.get("percentiles", [1.0, 99.0])
    return {"mode": "percentile", "percentiles": [float(lo), float(hi)], "range": [-1000.0, 1000.0]}


def apply_intensity(data: np.ndarray, intensity) -> np.ndarray:
    """A scan's values as network and method inputs: HU as they are; with a percentile
    entry, each scan's low/high percentiles mapped linearly onto its range, clipped."""
    if intensity == "HU" or not isinstance(intensity, dict):
        return data
    lo, hi = np.percentile(data, intensity["percentiles"])
    r0, r1 = intensity["range"]
    scale = (r1 - r0) / max(float(hi - lo), 1e-6)
    out = (data - np.float32(lo)) * np.float32(scale) + np.float32(r0)
    return np.clip(out, r0, r1).astype(np.float32)


def relative_to(path, prepared) -> str:
    """``path`` as the manifest of the prepared folder ``prepared`` refers to it (relative)."""
    import os

    return os.path.relpath(Path(path).resolve(), Path(prepared).resolve())


def pair_id(fixed: str, moving: str) -> str:
    return f"{fixed}_{moving}"


def field_name(fixed: str, moving: str) -> str:
    """Learn2Reg file name of the field that maps ``moving`` onto ``fixed``."""
    return f"disp_{fixed}_{moving}.nii.gz"


@dataclass
class Manifest:
    path: Path
    meta: dict

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.meta["shape"])

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.meta["spacing"])

    @property
    def labels(self) -> dict[int, str]:
        return {int(k): v for k, v in self.meta["labels"].items()}

    def cases(self, split: str | None = None) -> list[dict]:
        return [c for c in self.meta["cases"] if split is None or c["split"] == split]

    def pairs(self, split: str | None = None) -> list[dict]:
        return [p for p in self.meta["pairs"] if split is None or p["split"] == split]

    def case(self, case_id: str) -> dict:
        for c in self.meta["cases"]:
            if c["id"] == case_id:
                return c
        raise InputError(self.path, f"case '{case_id}' is not listed")

    def image_path(self, case_id: str) -> Path:
        return self.root / self.case(case_id)["image"]

    def label_path(self, case_id: str) -> Path:
        rel = self.case(case_id).get("label")
        if not rel:
            raise InputError(self.path, f"case '{case_id}' has no label map")
        return self.root / rel

    def keypoints_path(self, case_id: str) -> Path | None:
        """The case's Learn2Reg keypoint file (voxel coordinates), or None."""
        rel = self.case(case_id).get("keypoints")
        return self.root / rel if rel else None

    def load_image(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The case's image (float32) and affine: HU, or intensities normalised as the
        manifest's ``intensity`` says."""
        data, affine = load_image(self.image_path(case_id), self.shape, self.spacing)
        return apply_intensity(data, self.meta.get("intensity", "HU")), affine

    def load_labels(self, case_id: str) -> np.ndarray:
        """The case's labels, checked against the dataset's grid and against its image's
        axis orientation (labels on another grid than their image are refused)."""
        import nibabel as nib

        path = self.label_path(case_id)
        data, affine = load_labels(path, self.shape, self.spacing, self.labels)
        image = self.image_path(case_id)
        if not image.is_file():
            return data  # loading the image names the problem
        image_axes = nib.aff2axcodes(nib.load(str(image)).affine)
        if nib.aff2axcodes(affine) != image_axes:
            raise InputError(
                path,
                f"axis orientation {''.join(nib.aff2axcodes(affine))} differs "
                f"from its image's {''.join(image_axes)}",
            )
        return data


def train_val_pairs(manifest: Manifest, n_val: int = 4):
    """(fixed, moving) training pairs and validation pairs (the manifest's 'val' split, else
    the first ``n_val`` training pairs)."""
    train = [(p["fixed"], p["moving"]) for p in manifest.pairs("train")]
    if not train:
        raise InputError(manifest.path, "the training set is empty (no 'train' pairs)")
    val = [(p["fixed"], p["moving"]) for p in manifest.pairs("val")] or train[: max(1, n_val)]
    return train, val


def load_manifest(path) -> Manifest:
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    meta = read_json(path)
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise InputError(path, f"manifest lacks the keys {missing}")
    if meta["format"] != FORMAT:
        raise InputError(path, f"unknown manifest format '{meta['format']}' (expected {FORMAT})")
    try:
        label_ids = [int(k) for k in meta["labels"]]
    except (TypeError, ValueError):
        raise InputError(path, "labels must map integer ids to names") from None
    if any(not 1 <= i <= 255 for i in label_ids):
        bad = sorted(i for i in label_ids if not 1 <= i <= 255)
        raise InputError(path, f"label ids {bad} lie outside 1..255 (labels are stored as uint8)")
    ids = {c["id"] for c in meta["cases"]}
    for p in meta["pairs"]:
        for role in ("fixed", "moving"):
            if p[role] not in ids:
                raise InputError(path, f"pair {p} refers to the unknown case '{p[role]}'")
        if p.get("split") not in ("train", "val", "test"):
            raise InputError(path, f"pair {p} has no split train/val/test")
    return Manifest(path, meta)


def data_fingerprint(manifest: Manifest, pairs) -> str:
    """What a training read: the manifest's content, every case file's size and
    modification time (a re-prepared dataset has new files) and the pairs it trains and
    validates on.  A checkpoint carries it, so a resumed job continues on the same data."""
    import hashlib
    import json

    h = hashlib.sha256(manifest.path.read_bytes())
    for case in manifest.cases():
        for key in ("image", "label"):
            if case.get(key):
                st = (manifest.root / case[key]).stat()
                h.update(f"{case['id']}:{key}:{st.st_size}:{st.st_mtime_ns};".encode())
    h.update(json.dumps([list(p) for p in pairs]).encode())
    return h.hexdigest()[:16]
