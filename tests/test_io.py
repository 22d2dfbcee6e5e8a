"""Bad input: one clear error naming the file and the problem, and no partial outputs."""

import json

import nibabel as nib
import numpy as np
import pytest

from conftest import run_cli
from corereg.data.manifest import load_manifest
from corereg.data.synthetic import affine_for, generate_abdomen
from corereg.errors import InputError
from corereg.io import atomic_path, load_image, load_labels, save_nifti


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_abdomen(
        tmp_path_factory.mktemp("d") / "prep",
        "synth_abdomen",
        (24, 20, 28),
        (12.0, 12.0, 12.0),
        2,
        2,
        seed=0,
    )


def register_one(method, fixed, moving, out, *extra):
    return run_cli(
        "register", "--method", method, "--fixed", fixed, "--moving", moving, "--out", out, *extra
    )


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.nii\.gz: file does not exist"):
        load_image(tmp_path / "nope.nii.gz")


def test_not_a_nifti(tmp_path):
    p = tmp_path / "x.nii.gz"
    p.write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable NIfTI"):
        load_image(p)


def test_wrong_shape_and_spacing(tmp_path):
    p = tmp_path / "img.nii.gz"
    save_nifti(p, np.zeros((10, 12, 14), np.float32), affine_for((10, 12, 14), (2.0, 2.0, 2.0)))
    with pytest.raises(
        InputError,
        match=r"img\.nii\.gz: shape \(10, 12, 14\) differs from the expected \(10, 12, 15\)",
    ):
        load_image(p, shape=(10, 12, 15))
    with pytest.raises(InputError, match=r"voxel spacing \(2\.0, 2\.0, 2\.0\) mm differs"):
        load_image(p, spacing=(1.5, 1.5, 1.5))


def test_nan_in_image(tmp_path):
    p = tmp_path / "nan.nii.gz"
    a = np.zeros((6, 6, 6), np.float32)
    a[1, 2, 3] = np.nan
    save_nifti(p, a, np.eye(4))
    with pytest.raises(InputError, match=r"nan\.nii\.gz: image contains 1 NaN"):
        load_image(p)


def test_labels_outside_the_dataset_ids(tmp_path):
    p = tmp_path / "lab.nii.gz"
    a = np.zeros((6, 6, 6), np.uint8)
    a[0, 0, 0], a[1, 1, 1] = 3, 42
    save_nifti(p, a, np.eye(4))
    with pytest.raises(
        InputError, match=r"lab\.nii\.gz: label ids \[42\] are not labels of this dataset"
    ):
        load_labels(p, allowed=range(1, 14))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_outputs_get_the_umask_mode_not_the_temp_file_mode(tmp_path):
    import os

    from corereg.io import atomic_dir

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "a").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_cli_reports_one_line_and_writes_nothing(data, tmp_path):
    m = load_manifest(data)
    bad = tmp_path / "bad.nii.gz"
    img = nib.load(m.image_path("0001"))
    arr = np.asarray(img.dataobj, dtype=np.float32)
    arr[3, 3, 3] = np.nan
    save_nifti(bad, arr, img.affine)
    out = tmp_path / "fields" / "disp.nii.gz"
    proc = register_one("initial", m.image_path("0001"), bad, out)
    assert proc.returncode == 1
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert err == [f"error: {bad}: image contains 1 NaN or infinite voxels"]
    assert not out.exists()


def test_cli_mismatched_pair_and_bad_checkpoint(data, tmp_path):
    m = load_manifest(data)
    small = tmp_path / "small.nii.gz"
    save_nifti(small, np.zeros((8, 8, 8), np.float32), np.eye(4))
    proc = register_one("initial", m.image_path("0001"), small, tmp_path / "d.nii.gz")
    assert proc.returncode == 1 and "differs from the fixed image" in proc.stderr
    proc = register_one(
        "convexadam",
        m.image_path("0001"),
        m.image_path("0002"),
        tmp_path / "d.nii.gz",
        "--checkpoint",
        tmp_path / "none.pt",
    )
    assert proc.returncode == 1 and "none.pt: checkpoint file does not exist" in proc.stderr


def test_evaluate_rejects_a_field_on_the_wrong_grid(data, tmp_path):
    load_manifest(data)
    fields = tmp_path / "fields"
    fields.mkdir()
    (fields / "timing.csv").write_text("fixed,moving,seconds,device\n0003,0004,0.1,cpu\n")
    save_nifti(fields / "disp_0003_0004.nii.gz", np.zeros((5, 5, 5, 3), np.float32), np.eye(4))
    spec = json.dumps({"dataset": "d", "method": "m", "variant": "default", "seed": 0})
    out = tmp_path / "pairs.csv"
    proc = run_cli(
        "evaluate",
        "--manifest",
        data,
        "--fields",
        fields,
        "--spec",
        spec,
        "--out-structures",
        tmp_path / "s.csv",
        "--out-pairs",
        out,
    )
    assert proc.returncode == 1
    assert (
        "disp_0003_0004.nii.gz: field grid (5, 5, 5) differs from the fixed image (24, 20, 28)"
        in proc.stderr
    )
    assert not out.exists()


def test_manifest_with_unknown_case(tmp_path):
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "format": "corereg-manifest/1",
                "dataset": "x",
                "shape": [2, 2, 2],
                "spacing": [1, 1, 1],
                "labels": {"1": "a"},
                "cases": [{"id": "0001", "image": "i.nii.gz", "split": "test"}],
                "pairs": [{"fixed": "0001", "moving": "0009", "split": "test"}],
            }
        )
    )
    with pytest.raises(InputError, match="unknown case '0009'"):
        load_manifest(tmp_path)
