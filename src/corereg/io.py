"""NIfTI and table I/O with the checks of the data contract and atomic writes.

Every writer goes through a temporary file in the target folder and an
``os.replace``, so an interrupted step never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from corereg.errors import InputError

SPACING_TOL = 1e-3


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


MARKER = ".corereg-output"  # in every folder a step writes: such a folder may be replaced
# What a folder holds (its marker says so): a step replaces only a folder of its own kind.
DOWNLOAD, CONVERTED, LABELS = "a download", "converted scans", "labels"
PREPARED, FIELDS, FIGURE_FIELDS, TOOL, SUBMISSION = (
    "a prepared dataset",
    "registered fields",
    "a figure's fields",
    "a compiled tool",
    "a Learn2Reg submission",
)


def remove_stale_parts(path: Path) -> None:
    """Delete the temporary ``.<name>.*.part*`` siblings a killed step left behind."""
    for stale in path.parent.glob(f".{path.name}.*.part*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _parent_folder(path: Path) -> None:
    """Create ``path``'s parent folder, or say in one line why it cannot be made."""
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(parent, f"is a file, so {path} cannot be written below it")
            break
    path.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder; give the name of a file to write")
    _parent_folder(path)
    remove_stale_parts(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files; give the result the usual umask-based mode
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def marker_kind(folder: Path) -> str | None:
    """What the corereg step that wrote ``folder`` made (its marker), or None without a
    marker; folders of earlier versions carry a marker without a kind ("output")."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    try:
        return str(json.loads(marker.read_text()).get("kind", "output"))
    except (ValueError, AttributeError, OSError):
        return "output"


def check_replaceable(path: str | os.PathLike, kind: str = "output") -> None:
    """Refuse to replace a file, a non-empty folder that no corereg step wrote, or a
    folder a corereg step wrote as something else than ``kind`` (a prepared dataset is
    never replaced by fields, a model folder never by a dataset, ...)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(path, "is a file; give a folder to write into")
    if not path.is_dir() or not any(path.iterdir()):
        return
    found = marker_kind(path)
    if found is None:
        raise InputError(
            path,
            "folder exists and holds files corereg did not write; "
            "give a new or empty folder (nothing was changed)",
        )
    if "output" not in (found, kind) and found != kind:
        raise InputError(
            path,
            f"holds {found} written by corereg, not {kind}; give another folder for the "
            f"{kind} (nothing was changed)",
        )


def check_outputs(outputs: dict, inputs: dict) -> None:
    """Refuse, before anything is written, an output that is an input, lies inside an
    input folder or contains an input, and two outputs that are one path (resolved,
    symlinks followed).  ``outputs``/``inputs``: option name -> path (None: not given)."""
    outs = {k: Path(v).resolve() for k, v in outputs.items() if v}
    ins = {k: Path(v).resolve() for k, v in inputs.items() if v}
    seen: dict[Path, str] = {}
    for name, out in outs.items():
        if out in seen:
            raise InputError(out, f"is given as both {seen[out]} and {name}; give two paths")
        seen[out] = name
        for iname, inp in ins.items():
            if out == inp:
                problem = f"is the input {iname}"
            elif inp in out.parents and inp.is_dir():
                problem = f"lies inside the input folder {iname} ({inp})"
            elif out in inp.parents:
                problem = f"contains the input {iname} ({inp})"
            else:
                continue
            raise InputError(
                out, f"{name} {problem}: writing it would change the input; nothing was changed"
            )


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, kind: str = "output") -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; move it onto ``path`` on success.

    The folder is marked as corereg's ``kind`` (a prepared dataset, fields, ...); an
    existing folder without that mark (a user's), or with another kind, is never
    replaced.  Temporary folders of killed earlier runs are removed first."""
    path = Path(path)
    check_replaceable(path, kind)
    _parent_folder(path)
    remove_stale_parts(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "written_by": "corereg",
                    "kind": kind,
                    "note": "this folder is replaced when its step reruns",
                }
            )
            + "\n"
        )
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


NIFTI_SUFFIXES = (".nii.gz", ".nii")


def check_nifti_name(path) -> None:
    """A NIfTI output's name ends in .nii.gz (compressed) or .nii (uncompressed)."""
    if not str(path).endswith(NIFTI_SUFFIXES):
        raise InputError(path, "is not a NIfTI file name: end it in .nii.gz (or .nii)")


def save_nifti(path, array: np.ndarray, affine: np.ndarray, dtype=None, disk_dtype=None) -> None:
    """Write a NIfTI atomically (``.nii.gz`` compressed).  ``disk_dtype``: store the values
    scaled into that type (nibabel picks the NIfTI slope and intercept to span them)."""
    array = np.asarray(array if dtype is None else array.astype(dtype))
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "sec")
    if disk_dtype is not None:
        img.set_data_dtype(disk_dtype)
    elif np.issubdtype(array.dtype, np.integer):
        img.header.set_slope_inter(1, 0)
    check_nifti_name(path)
    suffix = ".nii.gz" if str(path).endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(img, tmp)


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def _load(path) -> nib.Nifti1Image:
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder, not a NIfTI file")
    if not path.is_file():
        raise InputError(path, "file does not exist")
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises several unrelated types
        raise InputError(
            path, f"not a readable NIfTI file ({exc.__class__.__name__}: {exc})"
        ) from exc


def _check_geometry(path, img, shape, spacing) -> None:
    if shape is not None and tuple(img.shape[:3]) != tuple(shape):
        raise InputError(
            path, f"shape {tuple(img.shape[:3])} differs from the expected {tuple(shape)}"
        )
    if spacing is not None:
        sp = spacing_of(img.affine)
        if any(abs(a - b) > SPACING_TOL * max(1.0, b) for a, b in zip(sp, spacing, strict=True)):
            got = tuple(round(s, 4) for s in sp)
            raise InputError(
                path, f"voxel spacing {got} mm differs from the expected {tuple(spacing)} mm"
            )


def load_image(path, shape=None, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """Load a 3-D CT image in HU as float32 and its affine, checking the contract."""
    img = _load(path)
    if img.ndim != 3:
        raise InputError(path, f"expected a 3-D image, found {img.ndim} dimensions {img.shape}")
    _check_geometry(path, img, shape, spacing)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise InputError(path, f"image data cannot be read ({exc})") from exc
    if not np.isfinite(data).all():
        n = int((~np.isfinite(data)).sum())
        raise InputError(path, f"image contains {n} NaN or infinite voxels")
    return data, img.affine


def load_labels(path, shape=None, spacing=None, allowed: Iterable[int] | None = None):
    """Load an integer label map, checking geometry and that every id is a known label."""
    img = _load(path)
    if img.ndim != 3:
        raise InputError(path, f"expected a 3-D label map, found {img.ndim} dimensions {img.shape}")
    _check_geometry(path, img, shape, spacing)
    data = np.asarray(img.dataobj)
    if not np.issubdtype(data.dtype, np.integer):
        if not np.isfinite(data).all() or not np.all(np.equal(np.round(data), data)):
            raise InputError(path, "label map contains non-integer values")
        data = data.astype(np.int64)
    if allowed is not None:
        ok = {0, *(int(a) for a in allowed)}
        found = {int(v) for v in np.unique(data)}
        bad = sorted(found - ok)
        if bad:
            raise InputError(
                path,
                f"label ids {bad} are not labels of this dataset (allowed: 0 and {sorted(ok - {0})})",
            )
    low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    if low < 0 or high > 255:
        raise InputError(
            path, f"label ids must lie in 0..255 (stored as uint8), found {low}..{high}"
        )
    return data.astype(np.uint8), img.affine


def load_field(path, shape=None) -> np.ndarray:
    """Load a Learn2Reg displacement field (H, W, D, 3) in voxel units of the fixed grid."""
    img = _load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 5 and data.shape[3] == 1:  # some writers store (H, W, D, 1, 3)
        data = data[:, :, :, 0, :]
    if data.ndim != 4 or data.shape[3] != 3:
        raise InputError(
            path, f"displacement field must have shape (H, W, D, 3), found {data.shape}"
        )
    if shape is not None and tuple(data.shape[:3]) != tuple(shape):
        raise InputError(
            path, f"field grid {data.shape[:3]} differs from the fixed image {tuple(shape)}"
        )
    if not np.isfinite(data).all():
        raise InputError(path, "displacement field contains NaN or infinite values")
    return data


FIELD_STORAGE = ("float32", "int16")


def save_field(path, disp: np.ndarray, affine: np.ndarray, storage: str = "float32") -> None:
    """Write a displacement field as float32, or as int16 with the NIfTI scale factor
    (``storage='int16'``: half the size; each value within half a scale step, i.e.
    max|d| / 65534 voxels, of the float32 one)."""
    disp = np.asarray(disp, dtype=np.float32)
    if disp.ndim != 4 or disp.shape[3] != 3:
        raise ValueError(f"field must be (H, W, D, 3), got {disp.shape}")
    if storage not in FIELD_STORAGE:
        raise ValueError(f"field storage must be one of {FIELD_STORAGE}, got {storage!r}")
    save_nifti(path, disp, affine, disk_dtype=None if storage == "float32" else np.int16)


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON ({exc})") from exc


def write_json(path, obj) -> None:
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path, frame) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def benchmark_seconds(rule_dir: Path, strict: bool = True) -> list[float]:
    """Wall seconds of every job of a rule from Snakemake's benchmark files under ``rule_dir``.
    A file that is not a benchmark file raises (``strict``) or is skipped."""
    out = []
    for tsv in sorted(Path(rule_dir).rglob("*.tsv")):
        try:
            out.append(float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1]))
        except (KeyError, IndexError, ValueError, pd.errors.ParserError) as exc:
            if strict:
                raise InputError(tsv, f"not a Snakemake benchmark file ({exc})") from exc
    return out
