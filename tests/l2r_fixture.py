"""A miniature Learn2Reg task in the release's exact layout, for the tests.

``ToyLung``: four subjects, each scanned twice (``_0000`` and ``_0001``; the second is the
first shifted by :data:`SHIFT` voxels), label maps, keypoints in both scans (so the
true displacement at every fixed keypoint is :data:`SHIFT`), a dataset json with
``training_paired_images`` (subjects 3, 4) and ``registration_val`` (subjects 1, 2), as
the Learn2Reg lung tasks have them.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from corereg.data.synthetic import affine_for, render_abdomen
from corereg.io import save_nifti

TASK = "ToyLung"
SHAPE, SPACING = (32, 32, 40), (12.0, 12.0, 12.0)
SHIFT = np.array([1, -1, 2])  # voxels: moving scan = fixed scan moved by SHIFT
LABELS = {1: "spleen", 2: "right kidney", 3: "left kidney", 6: "liver", 7: "stomach"}


def name(subject: int, modality: int, ext: str = ".nii.gz") -> str:
    return f"{TASK}_{subject:04d}_{modality:04d}{ext}"


def make_task(folder: Path, subjects=(1, 2, 3, 4), keypoints: bool = True) -> Path:
    """Write the task under ``folder``/ToyLung and return that folder."""
    root = Path(folder) / TASK
    affine = affine_for(SHAPE, SPACING)
    for s in subjects:
        hu, lab = render_abdomen(SHAPE, SPACING, np.random.default_rng(s), 12.0)
        lab = np.where(np.isin(lab, list(LABELS)), lab, 0).astype(np.uint8)
        moved = [np.roll(a, tuple(SHIFT), axis=(0, 1, 2)) for a in (hu, lab)]
        for mod, (h, lb) in enumerate([(hu, lab), moved]):
            save_nifti(root / "imagesTr" / name(s, mod), np.round(h), affine, dtype=np.int16)
            save_nifti(root / "labelsTr" / name(s, mod), lb, affine, dtype=np.uint8)
        if keypoints:
            rng = np.random.default_rng(100 + s)
            pts = rng.integers(4, np.array(SHAPE) - 4, size=(12, 3)).astype(float)
            kp = root / "keypointsTr"
            kp.mkdir(parents=True, exist_ok=True)
            np.savetxt(kp / name(s, 0, ".csv"), pts, delimiter=",", fmt="%.1f")
            np.savetxt(kp / name(s, 1, ".csv"), pts + SHIFT, delimiter=",", fmt="%.1f")

    def pair(s):
        return {"fixed": f"./imagesTr/{name(s, 0)}", "moving": f"./imagesTr/{name(s, 1)}"}

    meta = {
        "name": TASK,
        "release": "0.1",
        "tensorImageShape": {"0": list(SHAPE)},
        "labels": {"0": {"0": "background", **{str(k): v for k, v in LABELS.items()}}},
        "training": [
            {"image": f"./imagesTr/{name(s, m)}", "label": f"./labelsTr/{name(s, m)}"}
            for s in subjects
            for m in (0, 1)
        ],
        "training_paired_images": [pair(s) for s in subjects if s > 2],
        "registration_val": [pair(s) for s in subjects if s <= 2],
    }
    (root / f"{TASK}_dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def zipped(root: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(root.parent).as_posix())
    return buf.getvalue()


def dataset_entry(source: dict) -> dict:
    """A ``datasets.<key>`` entry of a configuration for the task."""
    return {
        "display": "ToyLung (Learn2Reg layout)",
        "shape": list(SHAPE),
        "spacing": list(SPACING),
        "eval_labels": sorted(LABELS),
        "window": [-200, 300],
        "source": {"kind": "learn2reg", **source},
    }
