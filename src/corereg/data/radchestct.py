"""RAD-ChestCT (Zenodo 6406114): metadata, longitudinal pairs, npz → NIfTI, resampling.

Facts (docs/data.md): one ``<NoteAcc_DEID>.npz`` per scan with the single key ``ct``
(int16 HU, clipped to [-1000, 1000], 0.8 mm isotropic, no spacing stored), axes
superior→inferior, anterior→posterior, right→left.  The patient of a scan is the
``MRN_DEID`` column of ``CT_Scan_Metadata_Complete_35747.csv``; the released scans
are listed by ``Summary_3630.csv``.

Pairs (the authors never published theirs): scans of the same patient among the
released ones, ordered by their volume id; ``pair_rule`` says what a patient with
more than two scans contributes: ``first_two`` (default: one pair per patient, so
no patient weighs more than another), ``consecutive`` (1-2, 2-3, ...), or ``all``.
The split is by patient, seeded, so no patient is in both sets.
"""

from __future__ import annotations

import csv
import random
from itertools import pairwise
from pathlib import Path

import nibabel as nib
import numpy as np

from corereg.errors import CoreregError, InputError
from corereg.io import save_nifti

METADATA = "CT_Scan_Metadata_Complete_35747.csv"
SUMMARY = "Summary_3630.csv"
NPZ_SPACING = 0.8


# ----------------------------------------------------------------------------- npz -> NIfTI
def npz_affine(shape, spacing: float = NPZ_SPACING) -> np.ndarray:
    """RAS+ affine of an array indexed (S→I, A→P, R→L): every axis runs against +S, +A, +R."""
    s = float(spacing)
    aff = np.array([[0, 0, -s, 0], [0, -s, 0, 0], [-s, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    # put the volume's centre at the world origin (no origin is stored)
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    aff[:3, 3] = -aff[:3, :3] @ centre
    return aff


def load_npz(path) -> np.ndarray:
    path = Path(path)
    try:
        with np.load(path) as z:
            if "ct" not in z.files:
                raise InputError(path, f"no array 'ct' in the npz (keys: {z.files})")
            ct = z["ct"]
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable npz ({exc.__class__.__name__}: {exc})") from exc
    if ct.ndim != 3:
        raise InputError(path, f"'ct' has {ct.ndim} dimensions, expected 3")
    return ct


def npz_to_canonical(path, spacing: float = NPZ_SPACING) -> nib.Nifti1Image:
    """The scan as a NIfTI image reoriented to RAS array order (nibabel's closest canonical)."""
    ct = load_npz(path)
    img = nib.Nifti1Image(ct.astype(np.int16), npz_affine(ct.shape, spacing))
    return nib.as_closest_canonical(img)


# ----------------------------------------------------------------------------- resampling
def resample(img: nib.Nifti1Image, spacing, order: int) -> nib.Nifti1Image:
    """To ``spacing`` mm with scipy (order 1: linear for images, 0: nearest for labels), same extent."""
    from scipy import ndimage

    old = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    new = np.asarray(spacing, dtype=np.float64)
    data = np.asarray(img.dataobj)
    shape = np.maximum(np.round(np.array(data.shape) * old / new).astype(int), 1)
    # output voxel i samples input coordinate i * new/old (voxel centres aligned at the first voxel)
    scale = new / old
    out = ndimage.affine_transform(
        data.astype(np.float32), scale, output_shape=tuple(shape), order=order, mode="nearest"
    )
    aff = img.affine.copy()
    aff[:3, :3] = img.affine[:3, :3] @ np.diag(scale)
    dtype = data.dtype if order == 0 else np.float32
    return nib.Nifti1Image(out.astype(dtype), aff)


def pad_crop(img: nib.Nifti1Image, shape, fill: float | None = None) -> nib.Nifti1Image:
    """Centre pad (with ``fill``, default the image minimum) / centre crop to ``shape``; affine follows."""
    data = np.asarray(img.dataobj)
    fill = data.min() if fill is None else fill
    out = np.full(tuple(shape), fill, dtype=data.dtype)
    src, dst = [], []
    offset = []
    for n_in, n_out in zip(data.shape, shape, strict=True):
        if n_in >= n_out:  # crop
            a = (n_in - n_out) // 2
            src.append(slice(a, a + n_out))
            dst.append(slice(0, n_out))
            offset.append(a)
        else:  # pad
            a = (n_out - n_in) // 2
            src.append(slice(0, n_in))
            dst.append(slice(a, a + n_in))
            offset.append(-a)
    out[tuple(dst)] = data[tuple(src)]
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ np.asarray(offset, dtype=np.float64) + img.affine[:3, 3]
    return nib.Nifti1Image(out, aff)


def convert_scan(npz_path, out_path, spacing, shape) -> Path:
    """npz → RAS NIfTI → ``spacing`` mm (linear) → centre pad/crop to ``shape`` (int16 HU)."""
    img = pad_crop(resample(npz_to_canonical(npz_path), spacing, order=1), shape)
    data = np.round(np.asarray(img.dataobj)).astype(np.int16)
    save_nifti(out_path, data, img.affine, dtype=np.int16)
    return Path(out_path)


# ----------------------------------------------------------------------------- pairs
def _read_csv(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise InputError(path, "no rows")
    return rows


def longitudinal_pairs(metadata_csv, summary_csv, rule: str = "first_two") -> list[dict]:
    """Pairs of released scans of the same patient: ``[{patient, fixed, moving}]``."""
    meta = _read_csv(metadata_csv)
    summary = _read_csv(summary_csv)
    if "NoteAcc_DEID" not in summary[0]:
        raise InputError(summary_csv, "column NoteAcc_DEID missing")
    for col in ("NoteAcc_DEID", "MRN_DEID"):
        if col not in meta[0]:
            raise InputError(metadata_csv, f"column {col} missing")
    released = {r["NoteAcc_DEID"].strip() for r in summary}
    by_patient: dict[str, list[str]] = {}
    for r in meta:
        scan = r["NoteAcc_DEID"].strip()
        if scan in released:
            by_patient.setdefault(r["MRN_DEID"].strip(), []).append(scan)
    pairs = []
    for patient, scans in sorted(by_patient.items()):
        scans = sorted(set(scans))
        if len(scans) < 2:
            continue
        if rule == "first_two":
            chosen = [(scans[0], scans[1])]
        elif rule == "consecutive":
            chosen = list(pairwise(scans))
        elif rule == "all":
            chosen = [(a, b) for i, a in enumerate(scans) for b in scans[i + 1 :]]
        else:
            raise CoreregError(f"pair_rule must be first_two, consecutive or all, not '{rule}'")
        pairs += [{"patient": patient, "fixed": a, "moving": b} for a, b in chosen]
    return pairs


def split_by_patient(pairs: list[dict], n_train: int, n_test: int, seed: int) -> list[dict]:
    """Seeded patient-level split: patients shuffled, test pairs first until ``n_test``, then train."""
    patients = sorted({p["patient"] for p in pairs})
    random.Random(seed).shuffle(patients)
    by_patient: dict[str, list[dict]] = {}
    for p in pairs:
        by_patient.setdefault(p["patient"], []).append(p)
    out, n = [], {"test": 0, "train": 0}
    for patient in patients:
        group = by_patient[patient]
        split = "test" if n["test"] < n_test else "train" if n["train"] < n_train else None
        if split is None:
            break
        n[split] += len(group)
        out += [{**p, "split": split} for p in group]
    return out


def split_by_prefix(pairs: list[dict]) -> list[dict]:
    """The authors' ``create_radchest_data_files_v2`` split: trn → train, val → test, tst → val."""
    names = {"trn": "train", "val": "test", "tst": "val"}
    return [{**p, "split": names[p["fixed"][:3]]} for p in pairs if p["fixed"][:3] in names]


# ----------------------------------------------------------------------------- the rules
PAIR_FIELDS = ["patient", "fixed", "moving", "split"]


def fetch(source, out, dataset: str = "radchest", log=print) -> Path:
    """Metadata first, then only the scans the pair list needs, from the Zenodo record.

    ``out`` (the rule's output) receives ``pairs.csv`` (with split, rule and seed in
    ``pairs.json``) and the two metadata CSVs; the verified scans stay in the
    sibling ``downloads/`` folder, which later runs reuse and resume.
    """
    import json

    from corereg.data.settings import SourceSettings
    from corereg.data.sources import download, token_from_env, zenodo_files
    from corereg.io import DOWNLOAD, atomic_dir

    out = Path(out)
    source = SourceSettings.of(source, f"datasets.{dataset}.source")
    record = source.record
    if not record:
        raise CoreregError(f"datasets.{dataset}.source: no Zenodo 'record'")
    token = token_from_env(source.token_env, required=True, what=f"Zenodo record {record}")
    net = source.network()
    files = {
        f.name: f for f in zenodo_files(record, api=source.api, token=token, timeout=source.timeout)
    }
    for name in (METADATA, SUMMARY):
        if name not in files:
            raise CoreregError(f"Zenodo record {record} has no file {name}")
    cache = out.parent / "downloads"
    for name in (METADATA, SUMMARY):
        f = files[name]
        download(f.url, cache / name, size=f.size, md5=f.md5, token=token, log=log, **net)
    pairs = longitudinal_pairs(cache / METADATA, cache / SUMMARY, source.pair_rule)
    how = source.split
    if how == "seeded":
        if source.n_train_pairs is None or source.n_test_pairs is None:
            raise CoreregError(
                f"datasets.{dataset}.source: the seeded split needs n_train_pairs and n_test_pairs"
            )
        pairs = split_by_patient(pairs, source.n_train_pairs, source.n_test_pairs, source.seed)
    elif how == "prefix_v2":
        pairs = split_by_prefix(pairs)
    else:
        raise CoreregError(
            f"datasets.{dataset}.source.split must be 'seeded' or 'prefix_v2', not '{how}'"
        )
    scans = sorted({p[r] for p in pairs for r in ("fixed", "moving")})
    missing = [s for s in scans if f"{s}.npz" not in files]
    if missing:
        raise CoreregError(
            f"Zenodo record {record} lacks {len(missing)} scans of the pair list, e.g. {missing[:3]}"
        )
    total = sum(files[f"{s}.npz"].size or 0 for s in scans)
    log(
        f"[download] {len(pairs)} pairs of {len(scans)} scans ({total / 1e9:.1f} GB) from record {record}"
    )
    for s in scans:
        f = files[f"{s}.npz"]
        download(f.url, cache / f.name, size=f.size, md5=f.md5, token=token, log=log, **net)
    counts = {k: sum(p["split"] == k for p in pairs) for k in ("train", "val", "test")}
    with atomic_dir(out, DOWNLOAD) as tmp:
        with open(tmp / "pairs.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, PAIR_FIELDS)
            w.writeheader()
            w.writerows({k: p[k] for k in PAIR_FIELDS} for p in pairs)
        (tmp / "pairs.json").write_text(
            json.dumps(
                {
                    "record": record,
                    "pair_rule": source.pair_rule,
                    "split": how,
                    "seed": source.seed,
                    "counts": counts,
                    "scans": len(scans),
                    "paper": {"pairs": 371, "train": 300, "test": 71},
                    "downloads": str(cache.resolve()),
                },
                indent=1,
            )
            + "\n"
        )
    log(f"[download] pair list: {counts} (paper: 371 pairs, 300 train / 71 test)")
    return out


def convert(raw, out, spec: dict, log=print) -> Path:
    """Every scan of ``pairs.csv``: npz → RAS NIfTI at the config's spacing, padded/cropped to its shape."""
    import json
    import shutil

    from corereg.io import CONVERTED, atomic_dir

    raw, out = Path(raw), Path(out)
    info = json.loads((raw / "pairs.json").read_text())
    cache = Path(info["downloads"])
    pairs = _read_csv(raw / "pairs.csv")
    scans = sorted({p[r] for p in pairs for r in ("fixed", "moving")})
    with atomic_dir(out, CONVERTED) as tmp:
        for k, s in enumerate(scans):
            convert_scan(
                cache / f"{s}.npz",
                tmp / "imagesTr" / f"RadChestCT_{s}_0000.nii.gz",
                spec["spacing"],
                spec["shape"],
            )
            if k % 25 == 0:
                log(f"[convert] {k + 1}/{len(scans)} {s}")
        shutil.copy(raw / "pairs.csv", tmp / "pairs.csv")
        shutil.copy(raw / "pairs.json", tmp / "pairs.json")
    log(f"[convert] {len(scans)} scans to {spec['spacing']} mm, {spec['shape']} voxels")
    return out


def finish_label(converted, label_dir) -> None:
    """Carry the pair list into the label folder and point at the converted scans."""
    import json
    import os
    import shutil

    converted, label_dir = Path(converted), Path(label_dir)
    shutil.copy(converted / "pairs.csv", label_dir / "pairs.csv")
    info = json.loads((converted / "pairs.json").read_text())
    info["converted"] = os.path.relpath(converted.resolve(), label_dir.resolve())
    (label_dir / "pairs.json").write_text(json.dumps(info, indent=1) + "\n")


def prepare(label_dir, out, dataset: str, spec: dict, log=print) -> Path:
    """Manifest of the converted scans, their TotalSegmentator labels (ids 1-22) and the pair split."""
    import json

    from corereg.data.manifest import relative_to, write_manifest
    from corereg.data.totalseg import STRUCTURES
    from corereg.io import PREPARED, atomic_dir, load_image, load_labels

    label_dir, out = Path(label_dir), Path(out)
    info = json.loads((label_dir / "pairs.json").read_text())
    converted = (label_dir / info["converted"]).resolve()
    pairs = _read_csv(label_dir / "pairs.csv")
    shape, spacing = tuple(spec["shape"]), tuple(spec["spacing"])
    labels = {i: name for i, name in enumerate(STRUCTURES, start=1)}
    split_of = {}
    for p in pairs:
        for role in ("fixed", "moving"):
            split_of.setdefault(p[role], p["split"])
    with atomic_dir(out, PREPARED) as tmp:
        cases = []
        for scan, split in sorted(split_of.items()):
            fn = f"RadChestCT_{scan}_0000.nii.gz"
            img, lab = converted / "imagesTr" / fn, label_dir / "labelsTr" / fn
            load_image(img, shape, spacing)
            load_labels(lab, shape, spacing, labels)
            cases.append(
                {
                    "id": scan,
                    "image": relative_to(img, out),
                    "label": relative_to(lab, out),
                    "split": split,
                }
            )
        write_manifest(
            tmp,
            dataset,
            "RadChestCT",
            "radchestct",
            shape,
            spacing,
            labels,
            cases,
            [{"fixed": p["fixed"], "moving": p["moving"], "split": p["split"]} for p in pairs],
            info.get("seed"),
            pairing={
                k: info.get(k) for k in ("record", "pair_rule", "split", "seed", "counts", "paper")
            },
        )
    log(
        f"[prepare] {dataset}: {len(cases)} scans, pairs {info.get('counts')} (paper: 300 train / 71 test)"
    )
    return out
