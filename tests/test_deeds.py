"""DEEDs adapter: the converted field reproduces the tool's own warps."""

import numpy as np
import pytest
from scipy import ndimage

from corereg.baselines import deeds
from corereg.data.synthetic import render_abdomen
from corereg.errors import CoreregError
from corereg.evaluation import identity_grid, warp_labels


@pytest.fixture(scope="module")
def ext():
    try:
        return deeds.extension()
    except CoreregError as exc:
        pytest.skip(str(exc))


def test_field_reproduces_the_tools_own_warps(ext):
    shape, spacing = (48, 40, 64), (8.0, 8.0, 8.0)
    fixed, fixed_lab = render_abdomen(shape, spacing, np.random.default_rng(1), 12.0)
    moving, moving_lab = render_abdomen(shape, spacing, np.random.default_rng(2), 12.0)
    method = deeds.Deeds({"alpha": 2.0, "levels": 3}, device=None)
    disp = method.register(fixed.astype(np.float32), moving.astype(np.float32))
    assert disp.shape == (*shape, 3) and np.abs(disp).max() > 0.5
    # the tool's warped image equals ours: trilinear, border clamped (mode="nearest")
    coords = identity_grid(shape) + np.moveaxis(disp, -1, 0)
    ours = ndimage.map_coordinates(moving.astype(np.float32), coords, order=1, mode="nearest")
    assert np.abs(ours - method.last_warped).max() < 1e-2 * np.abs(moving).max()
    # labels: with an integer-valued field the tool's trilinear warp is a nearest warp, so
    # its warped labels must equal the Learn2Reg label warp wherever the field stays in the grid
    rounded = np.round(disp)
    theirs, _ = ext.deedsWarp(moving_lab.astype(np.float32), *deeds.from_l2r(rounded))
    mine = warp_labels(moving_lab, rounded)
    inside = ((coords >= 0) & (coords <= np.array(shape)[:, None, None, None] - 1)).all(0)
    assert (np.rint(theirs).astype(np.uint8) == mine)[inside].mean() > 0.999

    def dice(a, b):
        return np.mean(
            [
                2 * ((a == k) & (b == k)).sum() / ((a == k).sum() + (b == k).sum())
                for k in range(1, 14)
                if (a == k).any() and (b == k).any()
            ]
        )

    assert dice(fixed_lab, warp_labels(moving_lab, disp)) > dice(fixed_lab, moving_lab) + 0.05


def test_axis_convention_on_a_known_shift(ext):
    rng = np.random.default_rng(0)
    fixed = ndimage.gaussian_filter(rng.normal(size=(40, 36, 44)), 3).astype(np.float32)
    moving = np.roll(fixed, (3, 0, 0), axis=(0, 1, 2))  # moving(x) = fixed(x - 3 e0)
    disp = deeds.Deeds({"levels": 3}, device=None).register(fixed, moving)
    inner = disp[10:-10, 10:-10, 10:-10]
    assert np.median(inner[..., 0]) == pytest.approx(3.0, abs=0.6)  # sample moving at x + 3 e0
    assert abs(np.median(inner[..., 1])) < 0.6 and abs(np.median(inner[..., 2])) < 0.6
