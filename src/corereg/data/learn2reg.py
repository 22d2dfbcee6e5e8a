"""Any Learn2Reg task in its release layout: a local folder or a downloaded archive.

Layout of a task (the Learn2Reg releases, e.g. ``AbdomenCTCT.zip``)::

    <Task>/<Task>_dataset.json
    <Task>/imagesTr/<Task>_<SSSS>_<MMMM>.nii.gz     (SSSS: subject, MMMM: modality or time point)
    <Task>/labelsTr/  (same names; optional per task)
    <Task>/masksTr/   (same names; optional)
    <Task>/keypointsTr/<Task>_<SSSS>_<MMMM>.csv     (optional: x,y,z voxel coordinates per row)

Pairs: from ``source.train`` / ``test`` / ``val`` (subject ids, modality 0000, all pairs
among each list, lower id fixed: the paper's AbdomenCTCT split), or else from the dataset
json: the test pairs are ``registration_val`` (or the key ``source.test_pairs`` names),
the training pairs are ``training_paired_images`` where the task has them and otherwise
all pairs among the training scans; scans of a test pair never train.

Case ids are the subject ids (``0001``) when every scan used has modality ``0000``
(AbdomenCTCT: the manifests are those the pipeline always wrote), else
``<subject>-<modality>`` (``0001-0000``, ``0001-0001``).  The scans are used as
distributed: their shape and spacing must be the dataset's (``shape``, ``spacing``).
"""

from __future__ import annotations

import json
import re
import zipfile
from itertools import combinations
from pathlib import Path

import numpy as np

from corereg.data.manifest import ABDOMEN_LABELS, intensity_of, relative_to, write_manifest
from corereg.data.settings import SourceSettings
from corereg.data.sources import ChecksumLock, download
from corereg.errors import CoreregError, InputError
from corereg.io import DOWNLOAD, PREPARED, atomic_dir, load_image, load_labels, write_json

LOCATION = "location.json"  # the download step's record of a local task folder
NAME_RE = re.compile(r"^(?P<task>.+)_(?P<subject>\d{4})_(?P<modality>\d{4})\.nii\.gz$")
# label names of the one task the pipeline knows by heart, when its json has none
KNOWN_LABELS = {"AbdomenCTCT": ABDOMEN_LABELS}


# ----------------------------------------------------------------------------- fetch
def fetch(source, out, log=print, dataset: str = "abdomen") -> Path:
    """The download step: a local ``source.path`` is checked and recorded in ``out``; an
    archive ``source.url`` is downloaded (verified; checksum pinned or locked) and unpacked."""
    source = SourceSettings.of(source, f"datasets.{dataset}.source")
    out = Path(out)
    if source.path:
        folder = Path(source.path).expanduser()
        if not folder.is_dir():
            raise InputError(folder, "is not a folder (datasets.*.source.path)")
        root = find_root(folder, source.task)
        with atomic_dir(out, DOWNLOAD) as tmp:
            write_json(tmp / LOCATION, {"root": str(root.resolve())})
        log(f"[download] {dataset}: the local task folder {root} (nothing downloaded)")
        return out
    if not source.url:
        raise CoreregError(f"datasets.{dataset}.source: neither a 'path' nor a 'url'")
    downloads = out.parent / "downloads"
    lock = ChecksumLock(out.parent / "checksums.lock.json")
    archive = download(
        source.url,
        downloads / Path(source.url.split("?")[0]).name,
        md5=source.md5,
        size=source.size,
        lock=lock,
        log=log,
        **source.network(),
    )
    try:
        with atomic_dir(out, DOWNLOAD) as tmp:
            unpack(archive, tmp)
            find_root(tmp, source.task)
    except InputError as exc:
        # not the release (a proxy's page, another archive): neither the file nor its
        # checksum is kept, so the next run downloads it anew
        lock.forget(archive.name)
        archive.unlink(missing_ok=True)
        raise InputError(
            archive,
            f"{exc.problem}; the archive and its checksum entry were removed, the next run "
            "downloads it again (a file of your own there: check that it is the release)",
        ) from None
    log(f"[download] unpacked {archive.name} into {out}")
    return out


def unpack(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                p = Path(member)
                if p.is_absolute() or ".." in p.parts:
                    raise InputError(archive, f"unsafe path '{member}' in the archive")
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise InputError(archive, f"not a zip archive ({exc})") from exc


def find_root(raw: Path, task: str | None = None) -> Path:
    """The folder holding ``<task>_dataset.json`` (any one task's json if ``task`` is unset)."""
    raw = Path(raw)
    if (raw / LOCATION).is_file():
        raw = Path(json.loads((raw / LOCATION).read_text())["root"])
    hits = sorted(raw.glob(f"**/{task}_dataset.json" if task else "**/*_dataset.json"))
    if not hits:
        what = f"{task}_dataset.json" if task else "*_dataset.json"
        raise InputError(raw, f"no {what}: not a Learn2Reg task folder")
    if len(hits) > 1 and not task:
        names = ", ".join(h.name for h in hits)
        raise InputError(raw, f"holds several tasks ({names}); name one as source.task")
    root = hits[0].parent
    if not (root / "imagesTr").is_dir():
        raise InputError(root, "folder imagesTr/ missing from the Learn2Reg task")
    return root


def task_name(root: Path) -> str:
    return sorted(root.glob("*_dataset.json"))[0].name.removesuffix("_dataset.json")


def read_labels(meta: dict, task: str, eval_labels) -> dict[int, str]:
    """Label names from the dataset json's ``labels`` block (flat, or per modality under
    "0"); otherwise the known names of the task, or ``label <id>`` for the evaluated ids."""
    block = meta.get("labels")
    if isinstance(block, dict) and block:
        inner = block.get("0", block) if isinstance(block.get("0"), dict) else block
        labels = {int(k): str(v) for k, v in inner.items() if str(k).isdigit() and int(k) > 0}
        if labels:
            return labels
    if task in KNOWN_LABELS:
        return dict(KNOWN_LABELS[task])
    return {int(i): f"label {int(i)}" for i in eval_labels}


# ----------------------------------------------------------------------------- pairs
def _scan(entry, meta_path: Path) -> tuple[str, str]:
    """(subject, modality) of a dataset json entry (a path or {"image": path})."""
    path = entry["image"] if isinstance(entry, dict) else entry
    m = NAME_RE.match(Path(str(path)).name)
    if not m:
        raise InputError(meta_path, f"'{path}' is not named <Task>_<subject>_<modality>.nii.gz")
    return m["subject"], m["modality"]


def _pairs_from_json(meta: dict, meta_path: Path, source) -> tuple[list, list]:
    """(train pairs, test pairs) as ((subject, modality), (subject, modality)) tuples."""
    key = source.test_pairs
    if not meta.get(key):
        raise InputError(meta_path, f"has no '{key}' pairs (set source.test_pairs or train/test)")
    test = [(_scan(p["fixed"], meta_path), _scan(p["moving"], meta_path)) for p in meta[key]]
    held_out = {s for pr in test for s, _ in pr}
    if meta.get("training_paired_images"):
        train = [
            (_scan(p["fixed"], meta_path), _scan(p["moving"], meta_path))
            for p in meta["training_paired_images"]
        ]
    else:
        scans = sorted({_scan(e, meta_path) for e in meta.get("training", [])})
        train = list(combinations(scans, 2))
    train = [pr for pr in train if not ({s for s, _ in pr} & held_out)]
    if not train:
        raise InputError(meta_path, "leaves no training pair beside the test pairs")
    return train, test


def _pairs_from_lists(source, meta_path: Path) -> tuple[list, list, list]:
    train, test, val = sorted(source.train), sorted(source.test), sorted(source.val)
    if set(train) & set(test):
        raise InputError(
            meta_path, f"config lists scans {sorted(set(train) & set(test))} in both train and test"
        )

    def scans(ids):
        return [(f"{i:04d}", "0000") for i in ids]

    return [list(combinations(scans(ids), 2)) for ids in (train, test, val)]


# ----------------------------------------------------------------------------- prepare
def _keypoints(path: Path, shape) -> None:
    """Keypoints: rows of three voxel coordinates inside the image."""
    try:
        pts = np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError as exc:
        raise InputError(path, f"keypoints are not rows of x,y,z numbers ({exc})") from None
    if pts.shape[1] != 3:
        raise InputError(path, f"keypoints have {pts.shape[1]} columns, expected 3 (x,y,z)")
    outside = ~((pts >= 0) & (pts <= np.array(shape) - 1)).all(axis=1)
    if outside.any():
        k = int(np.argmax(outside))
        raise InputError(
            path, f"keypoint {k + 1} {pts[k].tolist()} lies outside the image {list(shape)}"
        )


def prepare(raw, out, dataset: str, spec: dict, log=print) -> Path:
    """Check every scan of the split against the configuration and write the manifest."""
    source = SourceSettings.of(spec["source"], f"datasets.{dataset}.source")
    root = find_root(Path(raw), source.task)
    task = task_name(root)
    meta_path = root / f"{task}_dataset.json"
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(meta_path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    labels = read_labels(meta, task, spec.get("eval_labels") or [])
    shape, spacing = tuple(spec["shape"]), tuple(spec["spacing"])
    if source.train or source.test:
        train, test, val = _pairs_from_lists(source, meta_path)
        listed = {"train": source.train, "test": source.test}
        split_scans = {k: [(f"{i:04d}", "0000") for i in sorted(v)] for k, v in listed.items()}
    else:
        (train, test), val = _pairs_from_json(meta, meta_path, source), []
        split_scans = {
            k: sorted({s for pr in g for s in pr}) for k, g in (("train", train), ("test", test))
        }
    scans = {s for group in split_scans.values() for s in group}
    single = all(mod == "0000" for _, mod in scans)

    def cid(scan) -> str:
        return scan[0] if single else f"{scan[0]}-{scan[1]}"

    out = Path(out)
    with atomic_dir(out, PREPARED) as tmp:
        cases, axes = [], None
        for split in ("train", "test"):
            for scan in split_scans[split]:
                case, axes = _case(
                    root, task, scan, cid(scan), split, out, shape, spacing, labels, source
                )
                cases.append(case)
        pairs = [
            {"fixed": cid(a), "moving": cid(b), "split": s}
            for s, group in (("train", train), ("test", test), ("val", val))
            for a, b in group
        ]
        write_manifest(
            tmp,
            dataset,
            task,
            task.lower(),
            shape,
            spacing,
            labels,
            cases,
            pairs,
            None,
            orientation=f"as distributed ({axes})",
            intensity=intensity_of(spec),
            release=meta.get("release"),
        )
    counts = {s: sum(p["split"] == s for p in pairs) for s in ("train", "val", "test")}
    n_kp = sum("keypoints" in c for c in cases)
    log(f"[prepare] {dataset}: {len(cases)} scans ({n_kp} with keypoints), pairs {counts}")
    return out


def _case(root, task, scan, case_id, split, out, shape, spacing, labels, source):
    import nibabel as nib

    fn = f"{task}_{scan[0]}_{scan[1]}.nii.gz"
    img = root / "imagesTr" / fn
    if not img.is_file():
        raise InputError(img, "is named by the task's pairs but does not exist")
    lab = root / source.label_folder / fn
    if not lab.is_file():
        raise InputError(lab, f"label map of {fn} does not exist ({source.label_folder}/)")
    load_image(img, shape, spacing)  # shape, spacing and finite values
    load_labels(lab, shape, spacing, labels)
    image_axes = "".join(nib.aff2axcodes(nib.load(str(img)).affine))
    if "".join(nib.aff2axcodes(nib.load(str(lab)).affine)) != image_axes:
        raise InputError(lab, f"axis orientation differs from its image's {image_axes}")
    # relative to the prepared folder, which sits beside raw/
    case = {"id": case_id, "image": relative_to(img, out), "label": relative_to(lab, out)}
    kp = root / "keypointsTr" / fn.replace(".nii.gz", ".csv")
    if kp.is_file():
        _keypoints(kp, shape)
        case["keypoints"] = relative_to(kp, out)
    case["split"] = split
    return case, image_axes


# ----------------------------------------------------------------------------- export
def scan_of(case_id: str) -> tuple[str, str]:
    """(subject, modality) of a case id of a Learn2Reg manifest (``0001``: modality 0000)."""
    subject, _, modality = case_id.partition("-")
    return subject, modality or "0000"


def submission_name(fixed: str, moving: str, ext: str = ".nii.gz") -> str:
    """The field's file name in the long form that Learn2Reg's evaluation always accepts,
    ``disp_<fixed subject>_<modality>_<moving subject>_<modality>``."""
    (fs, fm), (ms, mm) = scan_of(fixed), scan_of(moving)
    return f"disp_{fs}_{fm}_{ms}_{mm}{ext}"


def export(manifest, fields: Path, out: Path, fmt: str = "nii.gz") -> list[str]:
    """Write every test pair's field of ``fields`` under its Learn2Reg name into ``out``:
    ``nii.gz`` (float32, the fixed image's affine) or ``npz`` (float16 array ``arr_0``,
    half the size; the evaluation reads both)."""
    from corereg.data.manifest import field_name
    from corereg.io import SUBMISSION, load_field, save_field

    written = []
    with atomic_dir(out, SUBMISSION) as tmp:
        for p in manifest.pairs("test"):
            disp = load_field(fields / field_name(p["fixed"], p["moving"]), manifest.shape)
            if fmt == "npz":
                target = tmp / submission_name(p["fixed"], p["moving"], ".npz")
                np.savez_compressed(target, arr_0=disp.astype(np.float16))
            else:
                import nibabel as nib

                affine = nib.load(str(manifest.image_path(p["fixed"]))).affine
                target = tmp / submission_name(p["fixed"], p["moving"])
                save_field(target, disp, affine)
            written.append(target.name)
    return written
