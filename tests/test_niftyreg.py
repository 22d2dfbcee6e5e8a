"""NiftyReg adapter: the converted field reproduces NiftyReg's own warped labels."""

import subprocess

import nibabel as nib
import numpy as np
import pytest

from corereg.baselines import niftyreg as nr
from corereg.data.synthetic import render_abdomen
from corereg.errors import CoreregError
from corereg.evaluation import warp_labels


def test_world_displacements_become_voxels_of_the_fixed_grid():
    affine = np.array([[0, 0, -2.0, 10], [0, -3.0, 0, 5], [4.0, 0, 0, -7], [0, 0, 0, 1]])
    d_vox = np.array([1.0, -0.5, 2.0])  # move by these voxel steps
    d_mm = affine[:3, :3] @ d_vox
    out = nr.world_to_voxel_disp(np.broadcast_to(d_mm, (2, 2, 2, 3)).copy(), affine)
    assert np.allclose(out, d_vox)


def test_missing_binaries_are_one_clear_error(tmp_path):
    with pytest.raises(CoreregError, match="no reg_f3d in"):
        nr.bin_dir(str(tmp_path))
    with pytest.raises(CoreregError, match="unknown parameters"):
        nr.NiftyReg({"levls": 3}, device=None)


@pytest.fixture(scope="module")
def tool():
    try:
        return nr.bin_dir()
    except CoreregError as exc:
        pytest.skip(str(exc))


def test_field_reproduces_niftyregs_own_warped_labels(tool, tmp_path):
    shape, spacing = (48, 40, 64), (4.0, 4.0, 4.0)
    fixed, fixed_lab = render_abdomen(shape, spacing, np.random.default_rng(1), 12.0)
    moving, moving_lab = render_abdomen(shape, spacing, np.random.default_rng(2), 12.0)
    # a flipped (LPS-like) affine exercises the world -> voxel conversion
    affine = np.diag([-4.0, -4.0, 4.0, 1.0])
    affine[:3, 3] = [90, 80, -120]
    method = nr.NiftyReg({"levels": 3, "similarity": "nmi", "max_iterations": 150}, device=None)
    method.affine = affine
    disp = method.register(fixed.astype(np.float32), moving.astype(np.float32), workdir=tmp_path)
    assert disp.shape == (*shape, 3) and np.abs(disp).max() > 0.5  # it moved something
    # NiftyReg's own resampling of the moving labels with its control-point grid
    nib.save(nib.Nifti1Image(fixed.astype(np.float32), affine), tmp_path / "f.nii.gz")
    nib.save(nib.Nifti1Image(moving_lab.astype(np.float32), affine), tmp_path / "ml.nii.gz")
    subprocess.run(
        [
            str(tool / "reg_resample"),
            "-ref",
            str(tmp_path / "f.nii.gz"),
            "-flo",
            str(tmp_path / "ml.nii.gz"),
            "-trans",
            str(method.last_cpp),
            "-inter",
            "0",
            "-res",
            str(tmp_path / "w.nii.gz"),
        ],
        check=True,
        capture_output=True,
    )
    theirs = np.rint(np.asarray(nib.load(tmp_path / "w.nii.gz").dataobj)).astype(np.uint8)
    ours = warp_labels(moving_lab, disp)
    # Where the field samples inside the moving grid both must agree (> 99.9 %); the only
    # convention that differs is a sample point up to half a voxel outside the grid, which
    # reg_resample rounds onto the border voxel and the Learn2Reg warp (map_coordinates,
    # order 0, constant 0) treats as outside.
    coords = np.moveaxis(disp, -1, 0) + np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"))
    inside = ((coords >= 0) & (coords <= np.array(shape)[:, None, None, None] - 1)).all(0)
    agree = (theirs == ours)[inside].mean()
    assert agree > 0.999, agree
    assert (theirs == ours).mean() > 0.99

    def dice(a, b):
        return np.mean(
            [
                2 * ((a == k) & (b == k)).sum() / ((a == k).sum() + (b == k).sum())
                for k in range(1, 14)
                if (a == k).any() and (b == k).any()
            ]
        )

    assert dice(fixed_lab, ours) > dice(fixed_lab, moving_lab) + 0.05  # and it registered
