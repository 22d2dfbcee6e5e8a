"""uniGradICON: the real package path on a random-weight network, and its field conversion."""

import numpy as np
import pytest
import torch

from corereg.baselines import unigradicon as ugi
from corereg.data.synthetic import render_abdomen
from corereg.errors import InputError, ToolMissing
from corereg.evaluation import identity_grid, warp_labels

# The package's network halves its input 7 times; 132^3 is about the smallest it accepts.
INPUT = [132, 132, 132]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    try:
        ugi.packages()
    except ToolMissing as exc:
        pytest.skip(str(exc))
    return ugi.random_weights(tmp_path_factory.mktemp("ugi") / "random.trch", INPUT)


def test_real_path_on_random_weights_reproduces_itks_own_warp(weights):
    """register_pair -> ITK transform -> dense field: warping the moving labels with the
    field equals ITK's own nearest-neighbour resampling with the transform."""
    shape, spacing = (32, 32, 40), (12.0, 12.0, 12.0)
    fixed, _ = render_abdomen(shape, spacing, np.random.default_rng(1), 12.0)
    moving, moving_lab = render_abdomen(shape, spacing, np.random.default_rng(2), 12.0)
    method = ugi.UniGradICON(
        {"weights": str(weights), "input_shape": INPUT, "io_iterations": 0}, torch.device("cpu")
    )
    disp = method.register(fixed.astype(np.float32), moving.astype(np.float32))
    assert disp.shape == (*shape, 3) and np.isfinite(disp).all()
    assert np.abs(disp).max() > 1.0  # the noisy random network moves voxels
    theirs = np.rint(method.own_warp(moving_lab.astype(np.float32))).astype(np.uint8)
    mine = warp_labels(moving_lab, disp)
    coords = identity_grid(shape) + np.moveaxis(disp, -1, 0)
    inside = ((coords >= 0) & (coords <= np.array(shape)[:, None, None, None] - 1)).all(0)
    assert (theirs == mine)[inside].mean() > 0.999


def test_axis_order_of_the_conversion_on_a_known_shift(weights):
    """A translation by (2, -1, 3) voxels along array axes (0, 1, 2) comes out as that field."""
    _, _, itk = ugi.packages()
    ref = ugi.to_itk(np.zeros((20, 24, 28), np.float32), ugi.UNIT)
    assert tuple(ref.GetLargestPossibleRegion().GetSize()) == (20, 24, 28)  # ITK index i = axis 0
    tr = itk.TranslationTransform[itk.D, 3].New()
    tr.SetOffset([2.0, -1.0, 3.0])
    disp = ugi.dense_field(tr, ref)
    assert disp.shape == (20, 24, 28, 3)
    np.testing.assert_allclose(disp[5, 6, 7], [2.0, -1.0, 3.0], atol=1e-5)
    np.testing.assert_allclose(disp.std(axis=(0, 1, 2)), 0.0, atol=1e-5)


def test_missing_or_wrong_weights(weights, tmp_path):
    with pytest.raises(InputError, match="weights file does not exist"):
        ugi.UniGradICON(
            {"weights": str(tmp_path / "nope.trch"), "input_shape": INPUT}, torch.device("cpu")
        )
    bad = tmp_path / "bad.trch"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a uniGradICON weights file"):
        ugi.UniGradICON({"weights": str(bad), "input_shape": INPUT}, torch.device("cpu"))


def test_weights_download_and_the_offline_record(weights, tmp_path):
    """The weights rule's command: a verified download with its checksum recorded; when the
    host cannot serve the file, a record whose reason the table shows ("not run: ...")."""
    from conftest import run_cli
    from http_fixture import LoopbackServer

    blob = b"\x80\x02weights" * 1000
    with LoopbackServer() as srv:
        srv.add("/unigradicon_weights/Step_2_final.trch", blob)
        out = tmp_path / "w" / "Step_2_final.trch"
        proc = run_cli(
            "fetch-weights",
            "--url",
            f"{srv.url}/unigradicon_weights/Step_2_final.trch",
            "--out",
            out,
        )
        assert proc.returncode == 0, proc.stderr
        assert (
            out.read_bytes() == blob
            and "Step_2_final.trch" in (out.parent / "checksums.json").read_text()
        )
        missing = tmp_path / "m" / "Step_2_final.trch"
        url = f"{srv.url}/nowhere.trch"
        proc = run_cli("fetch-weights", "--url", url, "--out", missing, "--if-missing", "fail")
        assert proc.returncode == 1 and not missing.exists() and proc.stderr.count("\n") == 1
        proc = run_cli("fetch-weights", "--url", url, "--out", missing, "--if-missing", "report")
        assert proc.returncode == 0 and missing.is_file()
    with pytest.raises(ToolMissing, match="weights could not be downloaded") as info:
        ugi.UniGradICON({"weights": str(missing), "input_shape": INPUT}, torch.device("cpu"))
    assert "delete" in info.value.reason and str(missing) in info.value.reason
