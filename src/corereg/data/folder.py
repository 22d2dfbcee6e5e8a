"""A folder of one's own scans: NIfTI images and label maps found by file patterns.

Settings (``datasets.<key>.source``, kind ``folder``)::

    path: /data/my_study            # the folder (patterns are relative to it)
    images: images/{id}.nii.gz      # {id}: the case id, any text without '/'
    labels: labels/{id}.nii.gz
    keypoints: null                 # optional: keypoints/{id}.csv (x,y,z voxel rows)
    pairing: all                    # all | consecutive | list
    pairs_csv: null                 # pairing list: a CSV with columns fixed,moving,split
    test_ids: [...]                 # pairing all/consecutive: the test cases
    val_ids: []                     # optional: validation cases among the training ones
    resample: true                  # false: every scan must already be on the dataset's grid

``all``: every pair among the training cases and every pair among the test cases (an
inter-patient set, lower id fixed); ``consecutive``: the scans of one patient in id order,
each registered to the one before (a longitudinal set as RAD-ChestCT's; the patient is
the id up to its last ``_``, e.g. ``p07_t1``).  Every scan is brought to RAS axis order,
resampled (linear; labels nearest) to the dataset's spacing and centre padded/cropped to
its shape, and written to the prepared folder.
"""

from __future__ import annotations

import csv
import re
from itertools import combinations, pairwise
from pathlib import Path

import numpy as np

from corereg.data.manifest import PAIR_SEP, intensity_of, write_manifest
from corereg.data.settings import SourceSettings
from corereg.errors import CoreregError, InputError
from corereg.io import PREPARED, atomic_dir, save_nifti


def _pattern(pattern: str) -> tuple[str, re.Pattern]:
    if pattern.count("{id}") != 1:
        raise CoreregError(f"source pattern '{pattern}' must hold {{id}} exactly once")
    glob = pattern.replace("{id}", "*")
    regex = re.compile("^" + re.escape(pattern).replace(r"\{id\}", "(?P<id>[^/]+)") + "$")
    return glob, regex


def find_cases(root: Path, source) -> dict[str, dict[str, Path]]:
    """Case id -> {"image", "label"[, "keypoints"]} from the source's patterns."""
    glob, regex = _pattern(source.images)
    cases = {}
    for f in sorted(root.glob(glob)):
        m = regex.match(f.relative_to(root).as_posix())
        if m and PAIR_SEP in m["id"]:
            raise InputError(f, f"case id '{m['id']}' holds '{PAIR_SEP}': rename the file")
        if m:
            cases[m["id"]] = {"image": f}
    if not cases:
        raise InputError(root, f"no scans match images: '{source.images}'")
    for key, pattern in (("label", source.labels), ("keypoints", source.keypoints)):
        if not pattern:
            continue
        for cid, entry in cases.items():
            f = root / pattern.replace("{id}", cid)
            if f.is_file():
                entry[key] = f
            elif key == "label":
                raise InputError(f, f"label map of case '{cid}' ({entry['image'].name}) is missing")
    return cases


def make_pairs(ids: list[str], source, root: Path) -> list[dict]:
    """The registration pairs with their split (see the module's text)."""
    if source.pairing == "list":
        if not source.pairs_csv:
            raise CoreregError("source: pairing 'list' needs pairs_csv (fixed,moving,split)")
        path = root / source.pairs_csv
        if not path.is_file():
            raise InputError(path, "pairs file does not exist")
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        pairs = []
        for k, r in enumerate(rows, start=2):
            if {"fixed", "moving", "split"} - set(r):
                raise InputError(path, "needs the columns fixed, moving, split")
            for role in ("fixed", "moving"):
                if r[role] not in ids:
                    raise InputError(
                        path, f"line {k} names the case '{r[role]}', which has no scan"
                    )
            if r["split"] not in ("train", "val", "test"):
                raise InputError(path, f"line {k}: split '{r['split']}' is not train, val or test")
            pairs.append({"fixed": r["fixed"], "moving": r["moving"], "split": r["split"]})
        return pairs
    unknown = sorted((set(source.test_ids) | set(source.val_ids)) - set(ids))
    if unknown:
        raise CoreregError(f"source: test_ids/val_ids {unknown} have no scan")
    test = [i for i in ids if i in source.test_ids]
    train = [i for i in ids if i not in source.test_ids]
    val = [i for i in train if i in source.val_ids]
    if source.pairing == "all":
        groups = {"train": train, "test": test, "val": val}
        return [
            {"fixed": a, "moving": b, "split": s}
            for s, group in groups.items()
            for a, b in combinations(group, 2)
        ]
    pairs = []
    for s, group in (("train", train), ("test", test), ("val", val)):
        by_patient: dict[str, list[str]] = {}
        for i in group:
            by_patient.setdefault(i.rsplit("_", 1)[0], []).append(i)
        for scans in by_patient.values():
            pairs += [{"fixed": a, "moving": b, "split": s} for a, b in pairwise(scans)]
    return pairs


def _on_grid(img, path: Path, shape, spacing, resample: bool, order: int):
    """The image in RAS axis order on the dataset's grid (resampled, padded/cropped)."""
    import nibabel as nib

    from corereg.data.radchestct import pad_crop
    from corereg.data.radchestct import resample as resample_to

    img = nib.as_closest_canonical(img)
    if img.ndim != 3:
        raise InputError(path, f"expected a 3-D image, found shape {img.shape}")
    have = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    if not resample:
        if not np.allclose(have, spacing, atol=1e-3) or tuple(img.shape) != tuple(shape):
            raise InputError(
                path,
                f"spacing {np.round(have, 3).tolist()} mm and shape {list(img.shape)} differ from "
                f"the dataset's {list(spacing)} mm and {list(shape)} (source.resample is false)",
            )
        return img
    if not np.allclose(have, spacing, atol=1e-3):
        img = resample_to(img, spacing, order)
    return pad_crop(img, shape, fill=None if order else 0)


def prepare(out, dataset: str, spec: dict, log=print) -> Path:
    """Bring every scan and label map to the dataset's grid and write the manifest."""
    import nibabel as nib

    source = SourceSettings.of(spec["source"], f"datasets.{dataset}.source")
    if not source.path or not source.images or not source.labels:
        raise CoreregError(f"datasets.{dataset}.source: kind folder needs path, images, labels")
    root = Path(source.path).expanduser()
    if not root.is_dir():
        raise InputError(root, "is not a folder (datasets.*.source.path)")
    shape, spacing = tuple(spec["shape"]), tuple(spec["spacing"])
    found = find_cases(root, source)
    pairs = make_pairs(sorted(found), source, root)
    used = sorted({p[r] for p in pairs for r in ("fixed", "moving")})
    test_ids = {p[r] for p in pairs if p["split"] == "test" for r in ("fixed", "moving")}
    labels = {int(i): f"label {int(i)}" for i in spec["eval_labels"]}
    labels.update({int(k): str(v) for k, v in (spec.get("label_names") or {}).items()})
    with atomic_dir(Path(out), PREPARED) as tmp:
        cases = []
        for cid in used:
            entry = found[cid]
            try:
                img, lab = nib.load(str(entry["image"])), nib.load(str(entry["label"]))
            except Exception as exc:  # nibabel raises several kinds
                raise InputError(entry["image"], f"cannot be read as NIfTI ({exc})") from None
            if img.shape[:3] != lab.shape[:3] or not np.allclose(img.affine, lab.affine, atol=1e-3):
                raise InputError(
                    entry["label"],
                    f"label map lies on another grid (shape {list(lab.shape)}) than its image "
                    f"{entry['image'].name} (shape {list(img.shape)})",
                )
            img = _on_grid(img, entry["image"], shape, spacing, source.resample, 1)
            lab = _on_grid(lab, entry["label"], shape, spacing, source.resample, 0)
            data = np.asarray(img.dataobj, dtype=np.float32)
            if not np.isfinite(data).all():
                raise InputError(entry["image"], "image contains NaN or infinite voxels")
            ids = np.asarray(lab.dataobj)
            bad = sorted(set(np.unique(ids).astype(int).tolist()) - {0, *labels})
            if bad:
                raise InputError(
                    entry["label"], f"label ids {bad} are not the dataset's eval_labels"
                )
            rel_img, rel_lab = (
                f"imagesTr/{dataset}_{cid}.nii.gz",
                f"labelsTr/{dataset}_{cid}.nii.gz",
            )
            save_nifti(tmp / rel_img, data, img.affine, dtype=np.float32)
            save_nifti(tmp / rel_lab, ids, lab.affine, dtype=np.uint8)
            case = {"id": cid, "image": rel_img, "label": rel_lab}
            if "keypoints" in entry:
                case["keypoints"] = _keypoints_on_grid(entry, tmp, dataset, cid, img, shape)
            case["split"] = "test" if cid in test_ids else "train"
            cases.append(case)
        write_manifest(
            tmp,
            dataset,
            dataset,
            "folder",
            shape,
            spacing,
            labels,
            cases,
            pairs,
            None,
            intensity=intensity_of(spec),
        )
    counts = {s: sum(p["split"] == s for p in pairs) for s in ("train", "val", "test")}
    log(f"[prepare] {dataset}: {len(cases)} scans from {root}, pairs {counts}")
    return Path(out)


def _keypoints_on_grid(entry, tmp: Path, dataset: str, cid: str, img, shape) -> str:
    """Keypoints of the original scan, carried to the prepared grid (via world coordinates)."""
    import nibabel as nib

    pts = np.loadtxt(entry["keypoints"], delimiter=",", ndmin=2)
    original = nib.load(str(entry["image"]))
    world = nib.affines.apply_affine(original.affine, pts)
    new = nib.affines.apply_affine(np.linalg.inv(img.affine), world)
    outside = ~((new >= 0) & (new <= np.array(shape) - 1)).all(axis=1)
    if outside.any():
        k = int(np.argmax(outside))
        raise InputError(
            entry["keypoints"], f"keypoint {k + 1} {pts[k].tolist()} lies outside the image"
        )
    rel = f"keypointsTr/{dataset}_{cid}.csv"
    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(tmp / rel, new, delimiter=",", fmt="%.4f")
    return rel
