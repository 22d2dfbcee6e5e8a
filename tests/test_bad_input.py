"""Bad input, tried as a hostile user would: every case ends with exit status 1, one
line "error: <file>: <problem>" on stderr, and nothing written (or a user's folder left
untouched)."""

import gzip
import io
import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, one_line_error, run_cli, run_snakemake
from corereg.data.manifest import load_manifest
from corereg.data.synthetic import generate_abdomen

SHAPE = (16, 16, 16)


def nifti(path, data, spacing=(2.0, 2.0, 2.0), affine=None):
    aff = np.diag([*spacing, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(data), aff), str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    img = (rng.normal(size=SHAPE) * 100).astype(np.float32)
    f = {
        "good": nifti(d / "good.nii.gz", img),
        "good2": nifti(d / "good2.nii.gz", np.roll(img, 1, 0)),
        "nan": nifti(d / "nan.nii.gz", np.where(img > 150, np.nan, img).astype(np.float32)),
        "2d": nifti(d / "2d.nii.gz", img[0]),
        "4d": nifti(d / "4d.nii.gz", img[..., None]),
        "small": nifti(d / "small.nii.gz", img[:8]),
        "spacing3": nifti(d / "spacing3.nii.gz", img, spacing=(3.0, 3.0, 3.0)),
        "flipped": nifti(d / "flipped.nii.gz", img, affine=np.diag([-2.0, 2.0, 2.0, 1.0])),
        "shifted": nifti(
            d / "shifted.nii.gz",
            img,
            affine=np.array([[2, 0, 0, 50], [0, 2, 0, -20], [0, 0, 2, 7], [0, 0, 0, 1.0]]),
        ),
        "constant": nifti(d / "constant.nii.gz", np.full(SHAPE, -1000, np.float32)),
        "zero": nifti(d / "zero.nii.gz", np.zeros(SHAPE, np.float32)),
    }
    raw = (d / "good.nii.gz").read_bytes()
    (d / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    f["truncated"] = d / "truncated.nii.gz"
    (d / "text.nii.gz").write_bytes(gzip.compress(b"not an image at all"))
    f["text"] = d / "text.nii.gz"
    (d / "folder.nii.gz").mkdir()
    f["folder"] = d / "folder.nii.gz"
    f["missing"] = d / "missing.nii.gz"
    return f


PAIR_CASES = [
    ("nan", "good", "NaN or infinite voxels"),
    ("2d", "good", "expected a 3-D image"),
    ("4d", "good", "expected a 3-D image"),
    ("good", "small", "differs from the fixed image"),
    ("truncated", "good", "image data cannot be read"),
    ("text", "good", "not a readable NIfTI file"),
    ("missing", "good", "file does not exist"),
    ("folder", "good", "is a folder, not a NIfTI file"),
    (
        "good",
        "spacing3",
        "voxel spacing (3.0, 3.0, 3.0) mm differs from the fixed image's (2.0, 2.0, 2.0)",
    ),
    ("good", "flipped", "axis orientation LAS differs from the fixed image's RAS"),
    ("constant", "good", "image is constant (every voxel -1000)"),
    ("good", "zero", "image is constant (every voxel 0)"),
]


@pytest.mark.parametrize(("fixed", "moving", "message"), PAIR_CASES)
def test_register_one_pair_refuses_bad_images(files, tmp_path, fixed, moving, message):
    out = tmp_path / "disp.nii.gz"
    proc = run_cli(
        "register",
        "--method",
        "convexadam",
        "--fixed",
        files[fixed],
        "--moving",
        files[moving],
        "--out",
        out,
        "--device",
        "cpu",
    )
    one_line_error(proc, message)
    assert list(tmp_path.iterdir()) == []


def test_a_different_origin_alone_is_registered(files, tmp_path):
    out = tmp_path / "disp.nii.gz"
    proc = run_cli(
        "register",
        "--method",
        "initial",
        "--fixed",
        files["good"],
        "--moving",
        files["shifted"],
        "--out",
        out,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()


def test_out_pointing_at_a_folder(files, tmp_path):
    proc = run_cli(
        "register",
        "--method",
        "initial",
        "--fixed",
        files["good"],
        "--moving",
        files["good2"],
        "--out",
        tmp_path,
    )
    one_line_error(proc, str(tmp_path), "is a folder")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep") / "prepared"
    generate_abdomen(root, "abd", (16, 16, 16), (16.0, 16.0, 16.0), 2, 3, seed=0)
    return root


def test_out_dir_that_is_a_file_is_refused_before_registering(prepared, tmp_path):
    target = tmp_path / "fields"
    target.write_text("a file of the user")
    proc = run_cli("register", "--method", "initial", "--manifest", prepared, "--out-dir", target)
    one_line_error(proc, str(target), "is a file")
    assert "[register]" not in proc.stdout  # no pair was registered
    assert target.read_text() == "a file of the user"


def test_out_dir_with_a_users_files_is_left_alone(prepared, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    proc = run_cli("register", "--method", "initial", "--manifest", prepared, "--out-dir", target)
    one_line_error(proc, str(target), "holds files corereg did not write")
    assert [p.name for p in target.iterdir()] == ["thesis.tex"]


def test_a_killed_runs_temporary_folder_is_cleaned_and_own_output_replaced(prepared, tmp_path):
    target = tmp_path / "seed0"
    stale = tmp_path / ".seed0.x1y2z3.part"
    stale.mkdir()
    (stale / "disp_0001_0002.nii.gz").write_bytes(b"half written")
    for _ in range(2):  # the second run replaces the first run's output
        proc = run_cli(
            "register", "--method", "initial", "--manifest", prepared, "--out-dir", target
        )
        assert proc.returncode == 0, proc.stderr
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed0"]
    assert (target / "timing.csv").is_file()


def test_a_method_returning_nan_fails_its_job(prepared, tmp_path, monkeypatch):
    """ConvexAdam-like failure: a field with NaN never becomes a completed register job."""
    from corereg.adapters import make_method
    from corereg.errors import CoreregError
    from corereg.registration import register_manifest
    from corereg.registration.methods import Initial

    method = make_method("initial", {}, __import__("torch").device("cpu"))
    monkeypatch.setattr(
        Initial, "register", lambda self, f, m: np.full((*f.shape, 3), np.nan, np.float32)
    )
    with pytest.raises(
        CoreregError, match=r"initial, pair 0003 <- 0004: .* NaN or infinite values"
    ):
        register_manifest(load_manifest(prepared), method, tmp_path, warmup=False)
    assert list(tmp_path.iterdir()) == []


SPEC = json.dumps({"dataset": "abd", "method": "initial", "variant": "default", "seed": 0})


def evaluate_cli(manifest, fields, out):
    """`corereg evaluate` of the 'initial' run into out/s.csv and out/p.csv."""
    return run_cli(
        "evaluate",
        "--manifest",
        manifest,
        "--fields",
        fields,
        "--spec",
        SPEC,
        "--out-structures",
        out / "s.csv",
        "--out-pairs",
        out / "p.csv",
    )


def _evaluated(prepared, tmp_path):
    fields = tmp_path / "fields"
    proc = run_cli("register", "--method", "initial", "--manifest", prepared, "--out-dir", fields)
    assert proc.returncode == 0, proc.stderr
    proc = evaluate_cli(prepared, fields, tmp_path)
    assert proc.returncode == 0, proc.stderr
    return fields, tmp_path / "p.csv"


def test_labels_and_fields_of_the_wrong_kind(prepared, tmp_path):
    bad = tmp_path / "prepared"
    shutil.copytree(prepared, bad)
    m = load_manifest(bad)
    case = m.pairs("test")[0]["fixed"]
    lab, aff = nib.load(str(m.label_path(case))), m.label_path(case)
    data = np.asarray(lab.dataobj).astype(np.float32) + 0.5
    nifti(aff, data, affine=lab.affine)
    fields = tmp_path / "fields"
    proc = run_cli("register", "--method", "initial", "--manifest", bad, "--out-dir", fields)
    assert proc.returncode == 0
    proc = evaluate_cli(bad, fields, tmp_path)
    one_line_error(proc, str(m.label_path(case)), "non-integer values")
    nifti(aff, np.asarray(lab.dataobj).astype(np.int16) - 3, affine=lab.affine)
    proc = evaluate_cli(bad, fields, tmp_path)
    one_line_error(proc, "label ids [-3")
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "s.csv").exists()
    # a field on another grid
    shutil.copytree(prepared, tmp_path / "ok", dirs_exist_ok=True)
    good_fields = tmp_path / "f2"
    run_cli(
        "register", "--method", "initial", "--manifest", tmp_path / "ok", "--out-dir", good_fields
    )
    first = sorted(good_fields.glob("disp_*.nii.gz"))[0]
    nifti(first, np.zeros((8, 8, 8, 3), np.float32))
    proc = evaluate_cli(tmp_path / "ok", good_fields, tmp_path)
    one_line_error(proc, first.name, "differs from the fixed image")


def test_damaged_metrics_stop_the_table(prepared, tmp_path):
    _, pairs = _evaluated(prepared, tmp_path)
    spec = json.dumps(
        {
            "artifact": "t",
            "title": "T",
            "sdlogj": "sdlogj_code",
            "dice_aggregate": "pooled",
            "reference": None,
            "datasets": [
                {"key": "abd", "display": "Abd", "paper_key": "abdomen", "synthetic": True}
            ],
            "rows": [{"method": "initial", "variant": "default", "label": "Initial"}],
        }
    )
    out = tmp_path / "tables" / "t"

    def table():
        return run_cli(
            "table",
            "--spec",
            spec,
            "--metrics",
            pairs,
            "--manifests",
            f"abd={prepared}",
            "--out",
            out,
        )

    assert table().returncode == 0
    full = pairs.read_text()
    pd.read_csv(pairs).iloc[:1].to_csv(pairs, index=False)  # rows cut
    one_line_error(table(), str(pairs), "scores 1 pairs, the manifest of abd has 3 test pairs")
    pairs.write_text(full.replace(",0.", ",zz", 1))  # garbage in a number
    one_line_error(table(), str(pairs), "non-numeric")
    pairs.write_text("\x00\x01garbage")
    one_line_error(table(), str(pairs))
    one_line_error(table(), str(pairs), f"run `snakemake {pairs}` to rebuild it")
    pairs.unlink()
    one_line_error(table(), str(pairs), "file does not exist")


def test_a_damaged_metrics_file_stops_the_table_and_the_recovery_rebuilds_it(tiny_run):
    """Rows cut from a run's pairs.csv: the table job fails naming the file (Snakemake then
    removes the table), and deleting the file and rerunning rebuilds both correctly."""
    res = tiny_run / "results"
    victim = res / "metrics/synth_abdomen/initial/default/seed0/pairs.csv"
    table = res / "tables/table1.md"
    good_csv, good_table = victim.read_text(), table.read_text()
    args = (
        "--profile",
        "profiles/demo",
        "--configfile",
        "workflow/presets/tiny.yaml",
        "--config",
        f"results={res}",
        f"data_root={tiny_run}/data",
    )
    pd.read_csv(victim, dtype={"fixed": str, "moving": str}).iloc[:1].to_csv(victim, index=False)
    proc = run_snakemake("table1", *args, check=False)
    log = (res / "logs/report/table1.log").read_text()
    assert proc.returncode != 0 and f"error: {victim}: scores 1 pairs" in log
    assert not table.exists()  # no table made from damaged numbers
    victim.unlink()
    # the whole run, not only table1: the registration reruns (its fields were removed), and
    # what else reads the new pairs.csv (claims, report) is brought up to date as well, so
    # that the shared run is complete again for the other tests
    run_snakemake(*args)
    timing = ["seconds", "net_seconds", "adam_seconds", "adam_step_seconds", "peak_rss_mb"]

    def scores(text):
        frame = pd.read_csv(io.StringIO(text), dtype={"fixed": str, "moving": str})
        return frame.drop(columns=[c for c in timing if c in frame])

    pd.testing.assert_frame_equal(scores(victim.read_text()), scores(good_csv))
    assert table.read_text() == good_table


def test_data_root_below_a_file_and_a_missing_preset(tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    proc = run_snakemake(
        "-n",
        "--configfile",
        "workflow/presets/tiny.yaml",
        "--config",
        f"data_root={blocker}/data",
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert (
        proc.returncode != 0
        and f"data_root '{blocker}/data' lies below {blocker}, which is a file" in out
    )
    proc = run_cli("plan", "--configfile", tmp_path / "nope.yaml")
    one_line_error(proc, "nope.yaml: configuration file does not exist")
    assert (ROOT / "config.yaml").is_file()


def test_labels_in_another_orientation_than_their_image(prepared, tmp_path):
    bad = tmp_path / "prepared"
    shutil.copytree(prepared, bad)
    m = load_manifest(bad)
    case = m.pairs("test")[0]["fixed"]
    lab = nib.load(str(m.label_path(case)))
    flipped = lab.affine.copy()
    flipped[0, 0] *= -1
    nifti(m.label_path(case), np.asarray(lab.dataobj).astype(np.uint8), affine=flipped)
    from corereg.errors import InputError

    with pytest.raises(InputError, match=r"axis orientation .* differs from its image's"):
        load_manifest(bad).load_labels(case)
