"""Registration methods behind `corereg register`: conventions and known displacements."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import run_cli
from corereg.adapters import make_method
from corereg.data.synthetic import affine_for
from corereg.errors import CoreregError, NotImplementedYet
from corereg.io import load_field, save_nifti


def smooth_volume(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.normal(size=shape), 2.5) * 4000).astype(np.float32)


def test_initial_is_the_zero_field():
    m = make_method("initial", {}, torch.device("cpu"))
    disp = m.register(np.zeros((4, 5, 6), np.float32), np.zeros((4, 5, 6), np.float32))
    assert disp.shape == (4, 5, 6, 3) and not disp.any()


def test_convexadam_recovers_a_known_translation():
    fixed = smooth_volume((48, 40, 56))
    shift = (2.0, -3.0, 1.0)
    moving = ndimage.shift(fixed, shift, order=1, mode="nearest")  # moving(p) = fixed(p - shift)
    m = make_method(
        "convexadam", {"grid_sp": 4, "disp_hw": 4, "selected_niter": 40}, torch.device("cpu")
    )
    disp = m.register(fixed, moving)
    interior = disp[10:-10, 10:-10, 10:-10].reshape(-1, 3)
    np.testing.assert_allclose(interior.mean(0), shift, atol=0.3)
    assert np.abs(interior - shift).max() < 1.0


def test_unknown_and_planned_methods():
    with pytest.raises(
        NotImplementedYet, match="not implemented: registration method kind 'samconvex'"
    ):
        make_method("samconvex", {}, torch.device("cpu"), checkpoint=None)
    with pytest.raises(CoreregError, match="method kind 'lapirn' needs --checkpoint"):
        make_method("lapirn", {}, torch.device("cpu"), checkpoint=None)
    with pytest.raises(CoreregError, match="method kind 'engine' needs --checkpoint"):
        make_method("engine", {}, torch.device("cpu"), checkpoint=None)
    with pytest.raises(CoreregError, match="unknown method kind 'nope'"):
        make_method("nope", {}, torch.device("cpu"))
    with pytest.raises(CoreregError, match=r"unknown parameters \['bogus'\] of method kind"):
        make_method("convexadam", {"bogus": 1}, torch.device("cpu"))
    with pytest.raises(CoreregError, match="initial params: unknown parameters"):
        make_method("initial", {"levels": 1}, torch.device("cpu"))


def test_cli_one_pair_writes_a_learn2reg_field(tmp_path):
    shape, spacing = (32, 28, 36), (3.0, 3.0, 3.0)
    fixed = smooth_volume(shape, 1)
    moving = ndimage.shift(fixed, (1.0, 0.0, -2.0), order=1, mode="nearest")
    aff = affine_for(shape, spacing)
    save_nifti(tmp_path / "f.nii.gz", fixed, aff)
    save_nifti(tmp_path / "m.nii.gz", moving, aff)
    out = tmp_path / "disp_0001_0002.nii.gz"
    params = json.dumps({"grid_sp": 4, "disp_hw": 3, "selected_niter": 30})
    proc = run_cli(
        "register",
        "--method",
        "convexadam",
        "--params",
        params,
        "--fixed",
        tmp_path / "f.nii.gz",
        "--moving",
        tmp_path / "m.nii.gz",
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["seconds"] > 0 and report["device"].startswith("cpu")
    disp = load_field(out, shape)
    np.testing.assert_allclose(nib.load(out).affine, aff)
    np.testing.assert_allclose(
        disp[8:-8, 8:-8, 8:-8].reshape(-1, 3).mean(0), (1.0, 0.0, -2.0), atol=0.35
    )


def test_cli_cuda_request_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_cli(
        "register",
        "--method",
        "initial",
        "--fixed",
        "a",
        "--moving",
        "b",
        "--out",
        tmp_path / "x",
        "--device",
        "cuda",
    )
    assert proc.returncode == 1 and "CUDA is not available" in proc.stderr


def test_adapters_take_their_defaults_from_the_schema():
    """A parameter left out of the config gets the schema's default in the adapter."""
    from corereg.baselines import learned, niftyreg
    from corereg.config import method_defaults

    nr = niftyreg.NiftyReg({}, device=None)
    assert nr.params == method_defaults("niftyreg")
    assert nr.f3d_args() == ["-ln", "4", "--nmi", "-noConj"]
    assert niftyreg.NiftyReg({"levels": 2, "similarity": "ssd"}, device=None).f3d_args()[:3] == [
        "-ln",
        "2",
        "--ssd",
    ]
    vxm = learned.resolve_params("voxelmorph", {"iterations": 3})
    assert vxm["iterations"] == 3 and vxm["nb_features"] == [16, 32, 32, 32]
    assert vxm["val_pairs"] == 4 and vxm["window"] == [-1000.0, 1000.0]
    assert learned.resolve_params("lapirn", {})["level_iterations"] == [30000, 30000, 60000]
    assert "iterations" not in method_defaults("lapirn")  # LapIRN's length is per level


def test_no_import_circles_at_module_level():
    """Module-level imports between corereg modules form no cycle."""
    import ast

    from conftest import ROOT

    src = ROOT / "src"
    graph = {}
    for path in (src / "corereg").rglob("*.py"):
        mod = ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.parse(path.read_text()).body:  # module level only
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("corereg")
            ):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("corereg")}
        graph[mod] = deps

    def visit(node, stack, seen):
        for dep in graph.get(node, ()):
            if dep in stack:
                return [*stack[stack.index(dep) :], dep]
            if dep not in seen:
                seen.add(dep)
                found = visit(dep, [*stack, dep], seen)
                if found:
                    return found
        return None

    for mod in graph:
        cycle = visit(mod, [mod], {mod})
        assert cycle is None, " -> ".join(cycle)
