"""A folder of one's own scans (source kind ``folder``): MR-like intensities (0-4000,
no HU), another grid and axis order than the dataset's, consecutive pairs per patient;
bad folders refused in one line naming the file; Table 1 end to end."""

from __future__ import annotations

import argparse
import csv

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import run_snakemake
from corereg.adapters import SOURCE_KINDS
from corereg.data.manifest import load_manifest
from corereg.data.settings import SourceSettings
from corereg.data.synthetic import render_abdomen
from corereg.errors import CoreregError, InputError

SHAPE, SPACING = (32, 32, 40), (12.0, 12.0, 12.0)
RAW_SHAPE, RAW_SPACING = (40, 36, 48), (10.0, 10.0, 10.0)  # another grid than the dataset's
EVAL = [1, 2, 3, 6, 7]
IDS = [f"p{p}_t{t}" for p in range(1, 5) for t in (0, 1)]


def _mr_like(hu: np.ndarray, rng) -> np.ndarray:
    """Intensities of an MR-like scan: 0 outside the body, up to about 4000, no HU."""
    tissue = np.clip((hu + 1000.0) * 1.6, 0, 4000)
    return np.clip(tissue + rng.normal(0, 30, hu.shape), 0, None).astype(np.float32)


def make_folder(root, lps_for=("p2_t1",)) -> None:
    """Scans at 10 mm on a 40x36x48 grid; those in ``lps_for`` stored in LPS axis order."""
    for k, cid in enumerate(IDS):
        rng = np.random.default_rng(int(cid[1]) * 10)  # one anatomy per patient
        hu, lab = render_abdomen(RAW_SHAPE, RAW_SPACING, rng, 12.0)
        lab = np.where(np.isin(lab, EVAL), lab, 0).astype(np.uint8)
        if cid.endswith("t1"):  # the second visit: moved by two voxels
            hu, lab = (np.roll(a, (2, 0, 1), axis=(0, 1, 2)) for a in (hu, lab))
        img = _mr_like(hu, np.random.default_rng(k))
        affine = np.diag([*RAW_SPACING, 1.0])
        if cid in lps_for:  # same anatomy, stored with the first two axes flipped
            img, lab = img[::-1, ::-1], lab[::-1, ::-1]
            affine = np.diag([-RAW_SPACING[0], -RAW_SPACING[1], RAW_SPACING[2], 1.0])
            affine[:2, 3] = [
                (RAW_SHAPE[0] - 1) * RAW_SPACING[0],
                (RAW_SHAPE[1] - 1) * RAW_SPACING[1],
            ]
        for sub, arr in (("images", img), ("labels", lab)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nib.save(
                nib.Nifti1Image(np.ascontiguousarray(arr), affine),
                str(root / sub / f"{cid}.nii.gz"),
            )


def entry(root, **over) -> dict:
    return {
        "display": "My MR study",
        "shape": list(SHAPE),
        "spacing": list(SPACING),
        "eval_labels": EVAL,
        "window": [-1000, 1000],
        "clamp_eval": None,
        "intensity": {"mode": "percentile", "percentiles": [1, 99]},
        "label_names": {"6": "liver"},
        "source": {
            "kind": "folder",
            "path": str(root),
            "images": "images/{id}.nii.gz",
            "labels": "labels/{id}.nii.gz",
            "pairing": "consecutive",
            "test_ids": ["p1_t0", "p1_t1", "p2_t0", "p2_t1"],
            **over,
        },
    }


def prepare(root, out, **over):
    spec = entry(root, **over)
    args = argparse.Namespace(raw=None, out=str(out), dataset="mine")
    SOURCE_KINDS["folder"].prepare(args, spec, SourceSettings.of(spec["source"]))
    return load_manifest(out)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mine") / "study"
    make_folder(root)
    return root


def test_scans_come_to_the_datasets_grid_axis_order_and_intensity_scale(folder, tmp_path):
    m = load_manifest(prepare(folder, tmp_path / "prepared").path)
    assert [(p["fixed"], p["moving"], p["split"]) for p in m.pairs()] == [
        ("p3_t0", "p3_t1", "train"),
        ("p4_t0", "p4_t1", "train"),
        ("p1_t0", "p1_t1", "test"),
        ("p2_t0", "p2_t1", "test"),
    ]
    assert m.labels[6] == "liver" and m.labels[1] == "label 1"
    assert m.meta["intensity"]["mode"] == "percentile"
    img, affine = m.load_image("p2_t1")
    assert img.shape == SHAPE and "".join(nib.aff2axcodes(affine)) == "RAS"
    assert img.min() >= -1000 and img.max() <= 1000 and np.percentile(img, 50) > -1000
    # the LPS-stored scan shows the same anatomy as its RAS visit: labels overlap
    a, b = m.load_labels("p2_t0"), m.load_labels("p2_t1")
    both = (a > 0) & (b > 0)
    assert both.sum() > 0.5 * min((a > 0).sum(), (b > 0).sum())
    counts = SOURCE_KINDS["folder"].counts(SourceSettings.of(entry(folder)["source"]))
    assert (counts.scans, counts.train_pairs, counts.test_pairs, counts.train_scans) == (8, 2, 2, 4)


def _labels_other_grid(root):
    path = root / "labels" / "p3_t1.nii.gz"
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, :40], img.affine), str(path))


def _missing_label(root):
    (root / "labels" / "p4_t0.nii.gz").unlink()


def _pairs_naming_a_missing_scan(root):
    with open(root / "pairs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows(
            [["fixed", "moving", "split"], ["p1_t0", "p1_t1", "test"], ["p3_t0", "p9_t1", "train"]]
        )


def _id_with_the_pair_separator(root):
    for sub in ("images", "labels"):
        (root / sub / "p1_t0.nii.gz").rename(root / sub / "p1|a_t0.nii.gz")


@pytest.mark.parametrize(
    "change, over, culprit, fragment",
    [
        (_labels_other_grid, {}, "labels/p3_t1.nii.gz", "label map lies on another grid"),
        (_missing_label, {}, "labels/p4_t0.nii.gz", "label map of case 'p4_t0'"),
        (
            _pairs_naming_a_missing_scan,
            {"pairing": "list", "pairs_csv": "pairs.csv"},
            "pairs.csv",
            "line 3 names the case 'p9_t1', which has no scan",
        ),
        (
            lambda root: None,
            {"resample": False},
            "images/p1_t0.nii.gz",
            "differ from the dataset's",
        ),
        (
            _id_with_the_pair_separator,
            {"test_ids": ["p2_t0", "p2_t1"]},
            "images/p1|a_t0.nii.gz",
            "case id 'p1|a_t0' holds '|'",
        ),
    ],
    ids=[
        "labels-other-grid",
        "missing-label",
        "pair-names-missing-scan",
        "other-spacing",
        "id-with-pair-separator",
    ],
)
def test_bad_folders_are_refused_in_one_line_naming_the_file(
    folder, tmp_path, change, over, culprit, fragment
):
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(folder, copy)
    change(copy)
    with pytest.raises(InputError) as err:
        prepare(copy, tmp_path / "prepared", **over)
    text = str(err.value)
    assert "\n" not in text and culprit in text and fragment in text, text
    assert not (tmp_path / "prepared").exists()


def test_a_pattern_without_its_placeholder_is_one_line(folder, tmp_path):
    with pytest.raises(CoreregError, match=r"must hold \{id\} exactly once"):
        prepare(folder, tmp_path / "prepared", images="images/scan.nii.gz")


def test_a_configuration_naming_only_the_folder_runs_table1(folder, tmp_path):
    import shutil

    study = tmp_path / "study"
    shutil.copytree(folder, study)  # this test adds a scan to its folder
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"datasets": {"mine": entry(study)}, "artifacts": {"table1": {"datasets": ["mine"]}}}
        )
    )
    out = tmp_path / "run"
    args = (
        "table1",
        "--profile",
        "profiles/demo",
        "--configfile",
        "workflow/presets/tiny.yaml",
        str(cfg),
        "--config",
        f"results={out}/results",
        f"data_root={out}/data",
    )
    run_snakemake(*args, timeout=3600)
    table = pd.read_csv(out / "results/tables/table1.csv")
    ok = table[table.status == "ok"]
    assert {"Initial", "ConvexAdam (beyond the paper)", "Bigalke et al.", "CoRe"} <= set(ok.row)
    assert ok.dice_mean.between(0, 100).all() and ok.dice_30.notna().all()
    assert "tre" not in table or table.tre.isna().all()  # no keypoints here
    md = (out / "results/tables/table1.md").read_text()
    assert "My MR study" in md and "TRE mm" not in md
    # the folder is read in place: a scan added to it (a new visit) prepares the dataset again
    assert "Nothing to be done" in run_snakemake(*args, "-n").stdout
    for sub in ("images", "labels"):
        shutil.copy(study / sub / "p4_t1.nii.gz", study / sub / "p4_t2.nii.gz")
    plan = run_snakemake(*args, "-n")
    prepare = plan.stdout.split("rule prepare:")[1].split("\n\n")[0]
    reason = next(line for line in prepare.splitlines() if "reason:" in line)
    assert "p4_t2.nii.gz" in reason, prepare  # a new input, newer than the prepared folder
    assert "rule train:" in plan.stdout and "rule table:" in plan.stdout
    # a scan taken out of the folder too (the set of inputs shrinks)
    for sub in ("images", "labels"):
        (study / sub / "p4_t2.nii.gz").unlink()
        (study / sub / "p3_t1.nii.gz").unlink()
    plan = run_snakemake(*args, "-n")
    assert "rule prepare:" in plan.stdout and "rule table:" in plan.stdout, plan.stdout[-2000:]


def test_test_ids_without_a_scan_are_one_line(folder, tmp_path):
    with pytest.raises(CoreregError, match=r"test_ids/val_ids \['p9_t0'\] have no scan"):
        prepare(folder, tmp_path / "prepared", test_ids=["p1_t0", "p9_t0"])


def test_no_source_can_write_a_case_id_holding_the_pair_separator(tmp_path):
    from corereg.data.manifest import write_manifest

    case = {"id": "a|b", "image": "images/a.nii.gz", "label": "labels/a.nii.gz", "split": "test"}
    with pytest.raises(InputError, match=r"case id 'a\|b' holds '\|'"):
        write_manifest(tmp_path, "d", "d", "x", (4, 4, 4), (1, 1, 1), {1: "x"}, [case], [], 0)
    assert not (tmp_path / "manifest.json").exists()
