"""AbdomenCTCT (Learn2Reg release): download, unpack, check, and the paper's split.

Layout of ``AbdomenCTCT.zip`` (docs/data.md)::

    AbdomenCTCT/AbdomenCTCT_dataset.json
    AbdomenCTCT/imagesTr/AbdomenCTCT_0001_0000.nii.gz ... _0030_0000.nii.gz
    AbdomenCTCT/labelsTr/  (same names)
    AbdomenCTCT/imagesTs/  (hidden-test scans 0031-0050, unused)

The images are already 2 mm, 192×160×256, so "conversion" is a check of shape
and spacing against the config.  Split (the Learn2Reg validation set is the
paper's test set): test scans 1, 4, …, 28 → 45 pairs, the other 20 scans → 190
training pairs, fixed = lower id; ``val`` ids (a subset of the training scans,
as in the authors' code) give the in-training validation pairs.
"""

from __future__ import annotations

import json
import zipfile
from itertools import combinations
from pathlib import Path

from corereg.data.manifest import ABDOMEN_LABELS, relative_to, write_manifest
from corereg.data.settings import SourceSettings
from corereg.data.sources import ChecksumLock, download
from corereg.errors import CoreregError, InputError
from corereg.io import DOWNLOAD, PREPARED, atomic_dir, load_image, load_labels

NAME = "AbdomenCTCT"
# used when the dataset json has no label block
DEFAULT_LABELS = ABDOMEN_LABELS


def fetch(source, out, log=print, dataset: str = "abdomen") -> Path:
    """Download the archive (verified; checksum pinned or locked) and unpack it into ``out``."""
    source = SourceSettings.of(source, f"datasets.{dataset}.source")
    if not source.url:
        raise CoreregError(f"datasets.{dataset}.source: no 'url' to download from")
    out = Path(out)
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
            find_root(tmp)
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


def find_root(raw: Path) -> Path:
    """The folder holding ``AbdomenCTCT_dataset.json`` (the archive's top folder)."""
    hits = sorted(Path(raw).glob(f"**/{NAME}_dataset.json"))
    if not hits:
        raise InputError(raw, f"no {NAME}_dataset.json: not the Learn2Reg {NAME} release")
    root = hits[0].parent
    for sub in ("imagesTr", "labelsTr"):
        if not (root / sub).is_dir():
            raise InputError(root, f"folder {sub}/ missing from the {NAME} release")
    return root


def read_labels(meta: dict) -> dict[int, str]:
    block = meta.get("labels")
    if isinstance(block, dict) and block:
        inner = block.get("0", block) if isinstance(block.get("0"), dict) else block
        labels = {int(k): str(v) for k, v in inner.items() if str(k).isdigit() and int(k) > 0}
        if labels:
            return labels
    return dict(DEFAULT_LABELS)


def prepare(raw, out, dataset: str, spec: dict, log=print) -> Path:
    """Check every scan of the split against the config and write the manifest."""
    root = find_root(Path(raw))
    meta_path = root / f"{NAME}_dataset.json"
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(meta_path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    labels = read_labels(meta)
    source = SourceSettings.of(spec["source"], f"datasets.{dataset}.source")
    shape, spacing = tuple(spec["shape"]), tuple(spec["spacing"])
    train, test, val = sorted(source.train), sorted(source.test), sorted(source.val)
    if set(train) & set(test):
        raise InputError(
            meta_path, f"config lists scans {sorted(set(train) & set(test))} in both train and test"
        )
    out = Path(out)
    with atomic_dir(out, PREPARED) as tmp:
        cases = []
        for split, ids in (("train", train), ("test", test)):
            for i in ids:
                fn = f"{NAME}_{i:04d}_0000.nii.gz"
                img, lab = root / "imagesTr" / fn, root / "labelsTr" / fn
                load_image(img, shape, spacing)  # shape, spacing and finite values
                load_labels(lab, shape, spacing, labels)
                # relative to the prepared folder, which sits beside raw/
                cases.append(
                    {
                        "id": f"{i:04d}",
                        "image": relative_to(img, out),
                        "label": relative_to(lab, out),
                        "split": split,
                    }
                )
        pairs = [
            {"fixed": f"{a:04d}", "moving": f"{b:04d}", "split": s}
            for s, ids in (("train", train), ("test", test), ("val", val))
            for a, b in combinations(ids, 2)
        ]
        write_manifest(
            tmp,
            dataset,
            NAME,
            "abdomenctct",
            shape,
            spacing,
            labels,
            cases,
            pairs,
            None,
            orientation="as distributed (RAS)",
            release=meta.get("release"),
        )
    counts = {s: sum(p["split"] == s for p in pairs) for s in ("train", "val", "test")}
    log(f"[prepare] {dataset}: {len(cases)} scans, pairs {counts} (paper: train 190, test 45)")
    return out
