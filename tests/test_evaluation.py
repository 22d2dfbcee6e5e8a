"""Known-answer tests of the Learn2Reg evaluation conventions."""

import numpy as np
import pytest

from corereg.evaluation import (
    dice_per_label,
    evaluate_pair,
    hd95,
    jacobian_determinant,
    sdlogj_code,
    sdlogj_l2r,
    sdlogj_standard,
    warp_labels,
)


def labelled_volume(shape=(24, 20, 28)):
    lab = np.zeros(shape, np.uint8)
    lab[4:12, 3:9, 5:15] = 1
    lab[14:20, 10:17, 8:22] = 2
    lab[6:10, 12:16, 18:24] = 3
    return lab


def test_integer_shift_reproduces_labels_exactly():
    fixed = labelled_volume()
    shift = np.array([2, -3, 1])
    # moving(p) = fixed(p - shift)  =>  fixed(p) = moving(p + shift): disp = +shift
    moving = np.roll(fixed, tuple(shift), axis=(0, 1, 2))
    disp = np.broadcast_to(shift.astype(np.float32), (*fixed.shape, 3)).copy()
    warped = warp_labels(moving, disp)
    assert np.array_equal(warped, fixed)
    # the opposite sign is wrong: the convention is identity + disp, not identity - disp
    assert not np.array_equal(warp_labels(moving, -disp), fixed)


def test_dice_known_overlap_and_missing_structures():
    a = np.zeros((10, 10, 10), np.uint8)
    b = np.zeros_like(a)
    a[0:4, 0:5, 0:5] = 1  # 100 voxels
    b[2:6, 0:5, 0:5] = 1  # 100 voxels, 50 shared
    assert dice_per_label(a, b, [1])[0] == pytest.approx(0.5)
    # label 2 exists in the fixed map only: missing (NaN), never 0
    a[8:10, 8:10, 8:10] = 2
    rows, summary = evaluate_pair(a, b, np.zeros((10, 10, 10, 3), np.float32), [1, 2], (1, 1, 1))
    assert rows[0]["dice"] == pytest.approx(0.5)
    assert np.isnan(rows[1]["dice"]) and not rows[1]["present"]
    assert summary["dice"] == pytest.approx(0.5) and summary["n_structures"] == 1


def test_structure_lost_by_the_warp_counts_as_zero():
    lab = labelled_volume()
    disp = np.zeros((*lab.shape, 3), np.float32)
    disp[..., 0] = 100.0  # samples outside the image: everything is lost
    rows, summary = evaluate_pair(lab, lab, disp, [1, 2, 3], (1, 1, 1))
    assert [r["dice"] for r in rows] == [0.0, 0.0, 0.0]
    assert summary["dice"] == 0.0


def test_hd95_of_shifted_cubes_is_the_shift_in_mm():
    a = np.zeros((40, 40, 48), bool)
    b = np.zeros_like(a)
    a[10:30, 10:30, 10:30] = True
    b[10:30, 10:30, 14:34] = True  # shifted by 4 voxels along axis 2
    assert hd95(a, b, (1.0, 1.0, 2.5)) == pytest.approx(10.0)
    assert hd95(a, a, (1.0, 1.0, 2.5)) == 0.0


def test_uniform_scaling_has_constant_jacobian():
    shape = (20, 22, 24)
    grid = np.stack(
        np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1
    )
    centre = (np.array(shape) - 1) / 2
    a = 1.1
    disp = (a - 1.0) * (grid - centre)
    det = jacobian_determinant(disp)
    np.testing.assert_allclose(det, a**3, rtol=1e-10)
    assert sdlogj_l2r(disp) == pytest.approx(0.0, abs=1e-12)
    assert sdlogj_standard(disp) == pytest.approx(0.0, abs=1e-12)


def test_sdlogj_of_a_quadratic_field_matches_the_analytic_value():
    # disp_0 = x^2 / (2N)  =>  J = diag(1 + x/N, 1, 1), det = 1 + x/N (central differences are exact)
    shape, n = (30, 8, 9), 40.0
    x = np.arange(shape[0], dtype=np.float64)
    disp = np.zeros((*shape, 3))
    disp[..., 0] = (x**2 / (2 * n))[:, None, None]
    det_interior = 1 + x[2:-2] / n
    assert sdlogj_standard(disp) == pytest.approx(np.log(det_interior).std(), rel=1e-10)
    assert sdlogj_l2r(disp) == pytest.approx(np.log(det_interior + 3).std(), rel=1e-10)
    # The paper code pairs the a0 derivative with the a2 channel: the stretch lands off the
    # diagonal and its determinant stays 1, so its SDlogJ misses this deformation entirely.
    assert sdlogj_code(disp) == pytest.approx(0.0, abs=1e-12)
    assert sdlogj_standard(disp) > 0.05


def test_sdlogj_code_on_an_isotropic_cube_follows_its_formula():
    # On a cube, (n-1)/n scaling only: a uniform scaling a gives det M = (1 + (a-1)(n-1)/n)^3.
    n, a = 24, 1.05
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64)] * 3, indexing="ij"), -1)
    disp = (a - 1) * (grid - (n - 1) / 2)
    rng = np.random.default_rng(0)
    disp_noisy = disp + 0.05 * rng.normal(size=disp.shape)
    assert sdlogj_code(disp) == pytest.approx(0.0, abs=1e-12)
    assert sdlogj_code(disp_noisy) < sdlogj_standard(disp_noisy)


def test_field_grid_must_match_labels():
    with pytest.raises(ValueError, match="differs"):
        warp_labels(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5, 3), np.float32))
