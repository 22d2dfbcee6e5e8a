"""deedsBCV from a user's checkout: the build, the field conversion, and the real tool's warps.

The tests that run the real tool need its source (MIT, github.com/mattiaspaul/deedsBCV,
not vendored here): set CORE_DEEDSBCV_SOURCE to a checkout.  The build machinery, the
conversion (known answers) and the workflow wiring are tested without it.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import ndimage

from conftest import ROOT, run_cli, run_snakemake
from corereg.adapters import make_method
from corereg.baselines import deedsbcv
from corereg.data.synthetic import render_abdomen
from corereg.errors import CoreregError, InputError, ToolMissing
from corereg.evaluation import warp_labels
from corereg.workflow.jobs import Plan


def dice(a, b):
    return np.mean(
        [
            2 * ((a == k) & (b == k)).sum() / ((a == k).sum() + (b == k).sum())
            for k in range(1, 14)
            if (a == k).any() and (b == k).any()
        ]
    )


@pytest.fixture(scope="module")
def source():
    path = os.environ.get("CORE_DEEDSBCV_SOURCE")
    if not path:
        pytest.skip(
            "no deedsBCV source: set CORE_DEEDSBCV_SOURCE to a checkout of github.com/mattiaspaul/deedsBCV"
        )
    return Path(path)


@pytest.fixture(scope="module")
def bin_dir(source, tmp_path_factory):
    return deedsbcv.build(source, tmp_path_factory.mktemp("bcv") / "bin")


@pytest.fixture(scope="module")
def phantoms():
    shape, spacing = (48, 40, 64), (8.0, 8.0, 8.0)
    fixed, fixed_lab = render_abdomen(shape, spacing, np.random.default_rng(1), 12.0)
    moving, moving_lab = render_abdomen(shape, spacing, np.random.default_rng(2), 12.0)
    return fixed.astype(np.float32), fixed_lab, moving.astype(np.float32), moving_lab


# ----------------------------------------------------------------------------- the real tool
@pytest.mark.parametrize("linear", [False, True])
def test_field_reproduces_the_tools_own_warped_labels(bin_dir, phantoms, linear):
    fixed, fixed_lab, moving, moving_lab = phantoms
    runner = deedsbcv.Runner({"bin_dir": str(bin_dir), "linear": linear})
    disp = runner.register(fixed, moving, np.diag([8.0, 8.0, 8.0, 1.0]), moving_labels=moving_lab)
    assert disp.shape == (*fixed.shape, 3) and np.abs(disp).max() > 1.0
    assert (runner.last["matrix"] is not None) == linear
    # deedsBCV's own _deformed_seg.nii.gz against the Learn2Reg nearest warp of our field
    agree = (runner.last["warped_labels"] == warp_labels(moving_lab, disp)).mean()
    assert agree > 0.999, agree
    assert dice(fixed_lab, warp_labels(moving_lab, disp)) > dice(fixed_lab, moving_lab) + 0.05


def test_axis_convention_on_a_known_shift(bin_dir):
    rng = np.random.default_rng(0)
    fixed = (ndimage.gaussian_filter(rng.normal(size=(48, 40, 56)), 3) * 3000).astype(np.float32)
    moving = np.roll(fixed, (3, 0, 0), axis=(0, 1, 2))  # moving(x) = fixed(x - 3 e0)
    disp = deedsbcv.Runner({"bin_dir": str(bin_dir), "linear": False}).register(
        fixed, moving, np.eye(4)
    )
    inner = disp[12:-12, 12:-12, 12:-12]
    assert np.median(inner[..., 0]) == pytest.approx(3.0, abs=0.6)  # sample moving at x + 3 e0
    assert abs(np.median(inner[..., 1])) < 0.6 and abs(np.median(inner[..., 2])) < 0.6


def test_the_workflow_builds_it_and_fills_the_deeds_row(source, tmp_path):
    override = tmp_path / "deedsbcv.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "methods": {
                    "deeds": {
                        "params": {
                            "implementation": "deedsbcv",
                            "deedsbcv": {"source": str(source), "linear": False},
                        }
                    }
                }
            }
        )
    )
    target = f"{tmp_path}/results/metrics/synth_abdomen/deeds/default/seed0/pairs.csv"
    run_snakemake(
        target,
        "--profile",
        "profiles/demo",
        "--configfile",
        "workflow/presets/tiny.yaml",
        str(override),
        "--config",
        f"results={tmp_path}/results",
        f"data_root={tmp_path}/data",
    )
    build = tmp_path / "data/tools/deeds/deedsbcv"
    assert (build / "deedsBCV").is_file() and '"sha256_of_sources"' in (
        build / "build.json"
    ).read_text()
    assert (tmp_path / "results/logs/build/deeds/deedsbcv.log").is_file()
    import pandas as pd

    pairs = pd.read_csv(target)
    assert len(pairs) >= 1 and pairs.dice.notna().all() and (pairs.seconds > 0).all()


# ----------------------------------------------------------------------------- no tool needed
def fake_checkout(root: Path, body: str = "int main(){return 0;}\n") -> Path:
    (root / "src").mkdir(parents=True)
    for rel in deedsbcv.SOURCES.values():
        (root / rel).write_text(body)
    return root


def test_build_refuses_a_folder_that_is_not_a_checkout(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        deedsbcv.build(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "half" / "src").mkdir(parents=True)
    (tmp_path / "half" / "src" / "deedsBCV0.cpp").write_text("")
    with pytest.raises(InputError, match=r"linearBCV\.cpp: deedsBCV source: file missing"):
        deedsbcv.build(tmp_path / "half", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_compile_names_the_file_and_leaves_nothing(tmp_path):
    src = fake_checkout(tmp_path / "broken", "int main( { this is not C++\n")
    with pytest.raises(CoreregError, match=r"building deedsBCV from .*deedsBCV0.cpp failed"):
        deedsbcv.build(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_no_compiler_becomes_a_not_run_record_the_method_reports(tmp_path):
    src = fake_checkout(tmp_path / "src")
    with pytest.raises(ToolMissing, match="no C\\+\\+ compiler"):
        deedsbcv.build(src, tmp_path / "out", cxx="no-such-compiler")
    env = {"CXX": "no-such-compiler"}
    out = tmp_path / "bin"
    res = run_cli(
        "build-deedsbcv", "--source", src, "--out", out, "--if-missing", "report", env=env
    )
    assert res.returncode == 0, res.stderr
    with pytest.raises(ToolMissing, match="no C\\+\\+ compiler"):
        make_method(
            "deeds", {"implementation": "deedsbcv", "deedsbcv": {"bin_dir": str(out)}}, device=None
        )
    res = run_cli("build-deedsbcv", "--source", src, "--out", tmp_path / "b2", env=env)
    assert (
        res.returncode != 0 and "no C++ compiler" in res.stderr and not (tmp_path / "b2").exists()
    )


def test_displacement_file_layout_and_upsampling_known_answer(tmp_path):
    shape, step = (12, 8, 16), 4  # control grid (3, 2, 4)
    coarse = np.zeros((3, 3, 2, 4), dtype=np.float32)
    i = np.arange(3)[:, None, None]
    coarse[1] = 2.0 * i  # v: a ramp along the first axis, moves axis 0
    coarse[0] = 1.5  # u: constant, moves axis 1
    # the tool's layout: blocks u, v, w, each with the first axis fastest
    np.concatenate([c.transpose(2, 1, 0).ravel() for c in coarse]).astype("<f4").tofile(
        tmp_path / "d.dat"
    )
    back = deedsbcv.read_displacements(tmp_path / "d.dat", shape, step)
    np.testing.assert_array_equal(back, coarse)
    disp = deedsbcv.to_l2r(back, shape)
    pos = np.arange(12) * 3 / 12  # fine voxel i samples the grid at i * m1 / m, clamped
    expect = 2.0 * np.minimum(pos, 2.0)
    np.testing.assert_allclose(disp[:, 3, 5, 0], expect, atol=1e-6)
    assert np.allclose(disp[..., 1], 1.5) and np.allclose(disp[..., 2], 0.0)
    with pytest.raises(InputError, match="expected 3 x 2 x 2 x 4"):
        deedsbcv.read_displacements(tmp_path / "d.dat", (8, 8, 16), step)


def test_linear_matrix_is_read_transposed(tmp_path):
    # linearBCV writes A transposed: the translation is the file's last row
    (tmp_path / "m.txt").write_text("1  0  0  0\n0  1  0  0\n0  0  1  0\n2.5  -1  0.5  1\n")
    a = deedsbcv.read_matrix(tmp_path / "m.txt")
    np.testing.assert_allclose(a[:3, 3], [2.5, -1, 0.5])
    disp = deedsbcv.to_l2r(np.zeros((3, 2, 2, 2), np.float32), (4, 4, 4), a)
    np.testing.assert_allclose(disp[1, 2, 3], [2.5, -1, 0.5], atol=1e-6)
    (tmp_path / "bad.txt").write_text("1 0 0\n")
    with pytest.raises(InputError, match="4x4"):
        deedsbcv.read_matrix(tmp_path / "bad.txt")


def test_config_switch_needs_a_source_and_wires_the_build(tmp_path):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["methods"]["deeds"]["params"]["implementation"] = "deedsbcv"
    with pytest.raises(CoreregError, match=r"set params\.deedsbcv\.source"):
        Plan(cfg)
    src = fake_checkout(tmp_path / "checkout")
    cfg["methods"]["deeds"]["params"]["deedsbcv"]["source"] = str(src)
    plan = Plan(cfg)
    assert plan.assets("deeds") == {"tool": f"{plan.data_root}/tools/deeds/deedsbcv"}
    assert plan.assets("niftyreg") == {}
    from corereg.workflow.jobs import Run

    params = plan.register_params(Run("abdomen", "deeds", "default", 0))
    assert params["deedsbcv"]["bin_dir"] == plan.assets("deeds")["tool"]
    # the DAG: one build job, which the DEEDs register jobs wait for
    override = tmp_path / "o.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "methods": {
                    "deeds": {
                        "params": {"implementation": "deedsbcv", "deedsbcv": {"source": str(src)}}
                    }
                }
            }
        )
    )
    proc = run_snakemake(
        "-n",
        "--configfile",
        "config.yaml",
        str(override),
        "--config",
        f"results={tmp_path}/r",
        f"data_root={tmp_path}/d",
    )
    assert "build_deedsbcv" in proc.stdout
    assert f"{tmp_path}/d/tools/deeds/deedsbcv" in proc.stdout


def test_unknown_implementation_and_keys_are_refused(tmp_path):
    with pytest.raises(CoreregError, match=r"deeds params\.implementation: .deeds2. is not one of"):
        make_method("deeds", {"implementation": "deeds2"}, device=None)
    with pytest.raises(CoreregError, match="unknown parameters \\['randsamp'\\]"):
        deedsbcv.Runner({"bin_dir": str(tmp_path), "randsamp": 5})
    with pytest.raises(InputError, match="deedsBCV binary missing"):
        deedsbcv.Runner({"bin_dir": str(tmp_path)})
    with pytest.raises(CoreregError, match="corereg build-deedsbcv --source /src"):
        deedsbcv.Runner({"source": "/src"})
