"""Nothing a user types destroys data or mixes runs: every case is refused with exit status
1 and one line "error: <file>: <problem>", and no input file changes (checked by hashing
every file before and after)."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, kill_after_checkpoints, one_line_error, run_cli
from corereg.data.synthetic import generate_abdomen
from corereg.errors import CoreregError


def tree_hash(*roots) -> dict[str, str]:
    out = {}
    for root in roots:
        root = Path(root)
        for f in sorted([root] if root.is_file() else root.rglob("*")):
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    d = root / "prepared"
    generate_abdomen(d, "synth_abdomen", (16, 16, 16), (12.0, 12.0, 12.0), 2, 2, seed=1)
    fields = root / "fields"
    proc = run_cli(
        "register", "--method", "initial", "--manifest", str(d), "--out-dir", str(fields)
    )
    assert proc.returncode == 0, proc.stderr
    return root, d, fields


def _image(d: Path) -> Path:
    return sorted((d / "imagesTr").glob("*.nii.gz"))[0]


CASES = {
    "register --out onto the fixed image": lambda r, d, f: [
        "register",
        "--method",
        "initial",
        "--fixed",
        str(_image(d)),
        "--moving",
        str(sorted((d / "imagesTr").glob("*.nii.gz"))[1]),
        "--out",
        str(_image(d)),
    ],
    "register --out onto the moving image": lambda r, d, f: [
        "register",
        "--method",
        "initial",
        "--fixed",
        str(_image(d)),
        "--moving",
        str(sorted((d / "imagesTr").glob("*.nii.gz"))[1]),
        "--out",
        str(sorted((d / "imagesTr").glob("*.nii.gz"))[1]),
    ],
    "register --out-dir onto the prepared dataset": lambda r, d, f: [
        "register",
        "--method",
        "initial",
        "--manifest",
        str(d),
        "--out-dir",
        str(d),
    ],
    "register --out-dir inside the prepared dataset": lambda r, d, f: [
        "register",
        "--method",
        "initial",
        "--manifest",
        str(d / "manifest.json"),
        "--out-dir",
        str(d / "fields"),
    ],
    "register --out-dir holding the prepared dataset": lambda r, d, f: [
        "register",
        "--method",
        "initial",
        "--manifest",
        str(d),
        "--out-dir",
        str(r),
    ],
    "evaluate --out-pairs onto the manifest": lambda r, d, f: [
        "evaluate",
        "--manifest",
        str(d),
        "--fields",
        str(f),
        "--spec",
        '{"dataset": "synth_abdomen", "method": "initial", "variant": "default", "seed": 0}',
        "--out-structures",
        str(r / "s.csv"),
        "--out-pairs",
        str(d / "manifest.json"),
    ],
    "evaluate --out-pairs = --out-structures": lambda r, d, f: [
        "evaluate",
        "--manifest",
        str(d),
        "--fields",
        str(f),
        "--spec",
        '{"dataset": "synth_abdomen", "method": "initial", "variant": "default", "seed": 0}',
        "--out-structures",
        str(r / "x.csv"),
        "--out-pairs",
        str(r / "x.csv"),
    ],
    "evaluate --out-pairs onto the fields' timing.csv": lambda r, d, f: [
        "evaluate",
        "--manifest",
        str(d),
        "--fields",
        str(f),
        "--spec",
        '{"dataset": "synth_abdomen", "method": "initial", "variant": "default", "seed": 0}',
        "--out-structures",
        str(r / "s.csv"),
        "--out-pairs",
        str(f / "timing.csv"),
    ],
    "train --out onto the dataset": lambda r, d, f: [
        "train",
        "--data",
        str(d),
        "--method",
        "m",
        "--spec",
        '{"kind": "voxelmorph"}',
        "--out",
        str(d),
    ],
    "keep-field --out-dir onto the fields": lambda r, d, f: [
        "keep-field",
        "--fields",
        str(f),
        "--manifest",
        str(d),
        "--pair-index",
        "0",
        "--out-dir",
        str(f),
    ],
    "prepare --out inside --raw": lambda r, d, f: [
        "prepare",
        "--dataset",
        "x",
        "--spec",
        '{"shape": [16, 16, 16], "spacing": [12, 12, 12], "source": {"kind": "synthetic_abdomen", '
        '"seed": 1, "n_train": 2, "n_test": 2}}',
        "--raw",
        str(d),
        "--out",
        str(d / "again"),
    ],
}
EXPECT = {
    "register --out onto the fixed image": "--out is the input --fixed",
    "register --out onto the moving image": "--out is the input --moving",
    "register --out-dir onto the prepared dataset": "--out-dir is the input --manifest",
    "register --out-dir inside the prepared dataset": "lies inside the input folder --manifest",
    "register --out-dir holding the prepared dataset": "contains the input --manifest",
    "evaluate --out-pairs onto the manifest": "lies inside the input folder --manifest",
    "evaluate --out-pairs = --out-structures": "is given as both --out-structures and --out-pairs",
    "evaluate --out-pairs onto the fields' timing.csv": "lies inside the input folder --fields",
    "train --out onto the dataset": "--out is the input --data",
    "keep-field --out-dir onto the fields": "--out-dir is the input --fields",
    "prepare --out inside --raw": "lies inside the input folder --raw",
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_output_never_overwrites_an_input(data, case):
    root, d, fields = data
    before = tree_hash(root)
    one_line_error(run_cli(*CASES[case](root, d, fields)), EXPECT[case])
    assert tree_hash(root) == before
    assert not (d / "fields").exists() and not (d / "again").exists()


def test_out_dir_replaces_only_a_folder_of_its_own_kind(data, tmp_path):
    _, d, fields = data
    import shutil

    other = tmp_path / "prepared_copy"
    shutil.copytree(d, other)
    before = tree_hash(other)
    proc = run_cli("register", "--method", "initial", "--manifest", str(d), "--out-dir", str(other))
    one_line_error(proc, "holds a prepared dataset written by corereg, not registered fields")
    assert tree_hash(other) == before
    # its own kind is replaced (a rerun of the same step)
    again = run_cli(
        "register", "--method", "initial", "--manifest", str(d), "--out-dir", str(fields)
    )
    assert again.returncode == 0, again.stderr
    marker = json.loads((fields / ".corereg-output").read_text())
    assert marker["kind"] == "registered fields"


@pytest.mark.parametrize("name", ["o.nii", "o.nii.gz"])
def test_register_out_names_a_nifti_written_as_its_suffix_says(data, tmp_path, name):
    import nibabel as nib

    _, d, _ = data
    imgs = sorted((d / "imagesTr").glob("*.nii.gz"))
    out = tmp_path / name
    proc = run_cli(
        "register",
        "--method",
        "initial",
        "--fixed",
        str(imgs[0]),
        "--moving",
        str(imgs[1]),
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert nib.load(out).shape[-1] == 3
    head = out.read_bytes()[:2]
    assert (head == b"\x1f\x8b") == name.endswith(".gz")  # compressed only with .gz


def test_register_out_of_another_kind_is_refused(data, tmp_path):
    _, d, _ = data
    imgs = sorted((d / "imagesTr").glob("*.nii.gz"))
    proc = run_cli(
        "register",
        "--method",
        "initial",
        "--fixed",
        str(imgs[0]),
        "--moving",
        str(imgs[1]),
        "--out",
        str(tmp_path / "o.txt"),
    )
    one_line_error(proc, "is not a NIfTI file name: end it in .nii.gz")
    assert not (tmp_path / "o.txt").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--spec", "{not json"], "not valid JSON"),
        (["--spec", "[1, 2]"], "must be a JSON object, not list"),
        (["--spec", "@/nonexistent/spec.json"], "cannot read the settings file"),
    ],
)
def test_malformed_settings_are_one_line(data, tmp_path, args, fragment):
    _, d, f = data
    proc = run_cli(
        "evaluate",
        "--manifest",
        str(d),
        "--fields",
        str(f),
        *args,
        "--out-structures",
        str(tmp_path / "s.csv"),
        "--out-pairs",
        str(tmp_path / "p.csv"),
    )
    one_line_error(proc, fragment)


# ----------------------------------------------------------------------------- checkpoints
FAST = {
    "nb_features": [4, 8, 8, 8],
    "integration_steps": 2,
    "iterations": 6,
    "lr": 1e-3,
    "batch_size": 1,
    "val_every": 3,
    "ckpt_every": 2,
    "window": [-300, 300],
}


def test_a_checkpoint_of_other_data_is_refused_or_restarted_never_mixed(tmp_path):
    """Kill a training after its checkpoint, prepare other data into the same folder, run
    again: refused with one line (CLI), or started over (the workflow's setting)."""
    data = tmp_path / "prepared"
    generate_abdomen(data, "synth_abdomen", (16, 16, 16), (12.0, 12.0, 12.0), 3, 2, seed=1)
    out = tmp_path / "model"
    spec = json.dumps({"kind": "voxelmorph", "params": FAST, "dataset": {}, "seed": 0})
    code = (
        "import sys; from corereg.cli import main; "
        f"sys.exit(main(['train', '--data', {str(data)!r}, '--method', 'vm', '--spec', sys.argv[1], "
        f"'--out', {str(out)!r}, '--device', 'cpu']))"
    )
    proc = kill_after_checkpoints(code, 1, spec)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "checkpoint.pt").is_file()
    import shutil

    shutil.rmtree(data)  # the same folder, other data (another phantom seed)
    generate_abdomen(data, "synth_abdomen", (16, 16, 16), (12.0, 12.0, 12.0), 3, 2, seed=2)
    args = ["train", "--data", str(data), "--method", "vm", "--spec", spec, "--out", str(out)]
    refused = run_cli(*args, "--device", "cpu")
    one_line_error(refused, "checkpoint.pt: checkpoint was written on other training data")
    assert (out / "checkpoint.pt").is_file() and not (out / "final.pt").exists()
    restarted = run_cli(*args, "--device", "cpu", "--other-data-checkpoint", "restart")
    assert restarted.returncode == 0, restarted.stderr
    assert "written on other training data; starting over" in restarted.stdout
    assert "resumed" not in restarted.stdout
    assert (out / "final.pt").is_file() and not (out / "checkpoint.pt").exists()


def test_an_engine_checkpoint_carries_its_data(tmp_path):
    from corereg.data.manifest import load_manifest
    from corereg.training.selftrain import load_data

    a, b = tmp_path / "a", tmp_path / "b"
    generate_abdomen(a, "synth_abdomen", (16, 16, 16), (12.0, 12.0, 12.0), 3, 2, seed=1)
    generate_abdomen(b, "synth_abdomen", (16, 16, 16), (12.0, 12.0, 12.0), 3, 2, seed=2)
    fa, fb = (load_data(load_manifest(x)).fingerprint for x in (a, b))
    assert fa and fb and fa != fb
    assert load_data(load_manifest(a)).fingerprint == fa  # the same data: the same print


# ----------------------------------------------------------------------------- configuration
def test_a_key_given_twice_in_a_configuration_file(tmp_path):
    from corereg import config

    preset = tmp_path / "p.yaml"
    preset.write_text("seeds: [0]\ndevice: cpu\nseeds: [1, 2]\n")
    with pytest.raises(
        CoreregError, match=r"line 3: key 'seeds' is given twice \(first on line 1\)"
    ):
        config.load(ROOT / "config.yaml", [preset])
    preset.write_text("- a\n- b\n")
    with pytest.raises(CoreregError, match="holds settings by key, not a list"):
        config.load(ROOT / "config.yaml", [preset])


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            lambda c: c["artifacts"]["table2"]["rows"].append({"method": "bigalke"}),
            "artifacts.table2.rows: ('bigalke', 'default') listed twice",
        ),
        (
            lambda c: c["artifacts"]["fig3"]["datasets"].append("abdomen"),
            "artifacts.fig3.datasets: abdomen listed twice",
        ),
        (
            lambda c: c.update(results="results/with space"),
            "results 'results/with space' holds [' ']",
        ),
        (
            lambda c: c.update(data_root="data;rm -rf x"),
            "data_root 'data;rm -rf x' holds [' ', ';']",
        ),
        (lambda c: c.update(results="."), "is the working folder or holds it"),
    ],
)
def test_configurations_that_would_fail_late_or_write_badly_stop_the_plan(change, fragment):
    from corereg.workflow.jobs import Plan

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    change(cfg)
    with pytest.raises(CoreregError, match=None) as exc:
        Plan(cfg)
    assert fragment in str(exc.value)


def test_a_manifest_label_id_above_255_is_refused(tmp_path):
    from corereg.data.manifest import load_manifest
    from corereg.errors import InputError

    d = tmp_path / "p"
    generate_abdomen(d, "synth_abdomen", (16, 16, 16), (12.0, 12.0, 12.0), 2, 2, seed=1)
    meta = json.loads((d / "manifest.json").read_text())
    meta["labels"]["300"] = "too high"
    (d / "manifest.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"label ids \[300\] lie outside 1..255"):
        load_manifest(d)


# ----------------------------------------------------------------------------- downloads
def test_userinfo_in_a_url_is_redacted():
    from corereg.data.sources import _public_url, _userinfo, redact

    url = "https://alice:s3cret@host.example/data.zip?token=abc&x=1"
    shown = redact(_public_url(url), _userinfo(url))
    assert "s3cret" not in shown and "alice" not in shown and "abc" not in shown
    assert shown.startswith("https://***@host.example/data.zip")


def test_a_download_that_is_not_the_release_is_not_trusted(tmp_path):
    """A valid zip that is not the release: refused, and neither it nor its checksum kept."""
    import io
    import zipfile

    from corereg.data import abdomenctct
    from http_fixture import LoopbackServer

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("portal/index.html", "<html>log in</html>")
    with LoopbackServer() as srv:
        srv.add("/AbdomenCTCT.zip", buf.getvalue())
        source = {"kind": "abdomenctct", "url": f"{srv.url}/AbdomenCTCT.zip", "retries": 0}
        out = tmp_path / "raw"
        with pytest.raises(CoreregError, match="the archive and its checksum entry were removed"):
            abdomenctct.fetch(source, out, log=lambda *_: None)
        lock = json.loads((tmp_path / "checksums.lock.json").read_text())
        assert "AbdomenCTCT.zip" not in lock
        assert not (tmp_path / "downloads" / "AbdomenCTCT.zip").exists() and not out.exists()


def test_evaluate_settings_and_timing_files_that_cannot_be_scored(data, tmp_path):
    import shutil

    _, d, fields = data
    outs = ["--out-structures", str(tmp_path / "s.csv"), "--out-pairs", str(tmp_path / "p.csv")]
    base = ["evaluate", "--manifest", str(d)]
    one_line_error(run_cli(*base, "--fields", str(fields), "--spec", "{}", *outs), "lack")
    spec = '{"dataset": "synth_abdomen", "method": "initial", "variant": "default", "seed": 0}'
    for name, edit, fragment in [
        ("dup", lambda t: t + t.splitlines()[1] + "\n", "more than once"),
        ("noseconds", lambda t: t.replace("seconds", "secs"), "lacks the columns ['seconds']"),
    ]:
        bad = tmp_path / name
        shutil.copytree(fields, bad)
        timing = bad / "timing.csv"
        timing.write_text(edit(timing.read_text()))
        one_line_error(run_cli(*base, "--fields", str(bad), "--spec", spec, *outs), fragment)
    assert not (tmp_path / "p.csv").exists()


def test_convexadam_refuses_images_too_thin_for_its_grid(tmp_path):
    import numpy as np
    import torch

    from corereg.adapters import make_method

    method = make_method("convexadam", {"grid_sp": 6}, torch.device("cpu"))
    thin = np.zeros((12, 32, 32), np.float32)
    with pytest.raises(CoreregError, match=r"too thin for grid_sp 6 \(every size needs at least"):
        method.register(thin, thin)


def test_every_kind_of_failed_request_is_one_named_line(tmp_path):
    from corereg.data.sources import DownloadError, download, zenodo_files
    from http_fixture import LoopbackServer

    with pytest.raises(DownloadError, match=r"x\.zip: ftp://host/x\.zip cannot be downloaded"):
        download("ftp://host/x.zip", tmp_path / "x.zip", retries=0, log=lambda *_: None)
    with pytest.raises(
        DownloadError, match=r"y\.zip: <a URL that cannot be parsed> is not a valid"
    ):
        download("http://[::1", tmp_path / "y.zip", retries=0, log=lambda *_: None)
    with LoopbackServer() as srv:
        srv.add("/api/records/7/page", b"<html>log in</html>")  # not the records API
        with pytest.raises(DownloadError, match="answered with something that is not JSON"):
            zenodo_files("7", api=f"{srv.url}/api/records/7/page#", timeout=5)
    assert not list(tmp_path.iterdir())
