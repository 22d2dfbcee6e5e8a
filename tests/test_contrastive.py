"""CoRe's contrastive loss: InfoNCE forms, views, sampling, α schedules, L_cl-only training."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import engine_params
from corereg.data.manifest import load_manifest
from corereg.data.synthetic import generate_abdomen
from corereg.errors import CoreregError
from corereg.registration.network import FeatureNet
from corereg.training.augment import affine_grid, augment_image, draw_affines
from corereg.training.contrastive import (
    bezier_intensity,
    check_params,
    cl_weight,
    contrastive_loss_listing1,
    gather,
    info_nce,
    sample_locations,
    views,
)


def test_info_nce_paper_form_by_hand():
    # inner product, tau = 1, negatives a_k and b_k (k != j) of the same image, summed
    a = [torch.tensor([[2.0, 0.0], [1.0, 1.0]])]
    b = [torch.tensor([[1.0, 0.0], [0.0, 2.0]])]
    p = engine_params(
        cl_normalize=False, cl_negatives="both_views", cl_reduction="sum", cl_temperature=1.0
    )
    e = math.e
    # anchor 0: pos a0.b0 = 2, negatives a0.a1 = 2, a0.b1 = 0; anchor 1: pos 2, negatives 2 and a1.b0 = 1
    expected = (math.log(2 * e**2 + 1) - 2) + (math.log(2 * e**2 + e) - 2)
    assert info_nce(a, b, p).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_code_form_by_hand():
    # cosine, tau = 0.5, keys = all view-B vectors of the batch (two images), mean over anchors
    a = [torch.tensor([[3.0, 0.0]]), torch.tensor([[1.0, 1.0]])]
    b = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 5.0]])]
    p = engine_params(
        cl_normalize=True, cl_negatives="view_b_batch", cl_reduction="mean", cl_temperature=0.5
    )
    s = 1 / math.sqrt(2)  # cosines: a0.b0 = 1, a0.b1 = 0, a1.b0 = s, a1.b1 = s
    l0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(0)))
    l1 = -math.log(math.exp(2 * s) / (math.exp(2 * s) + math.exp(2 * s)))
    assert info_nce(a, b, p).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


class Pointwise(torch.nn.Module):
    """A network equivariant by construction: a linear 1x1x1 map, optionally after 4x pooling."""

    def __init__(self, pool: bool):
        super().__init__()
        self.pool = pool
        self.lin = torch.nn.Conv3d(1, 3, 1)

    def conv4(self, x):
        return self.lin(F.avg_pool3d(x, 4) if self.pool else x)


@pytest.mark.parametrize("pool", [False, True])
def test_view_b_matches_view_a_for_an_equivariant_network(pool):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    from scipy import ndimage

    img = torch.from_numpy(
        ndimage.gaussian_filter(rng.normal(size=(48, 48, 48)), 4).astype(np.float32)
    )[None, None]
    net = Pointwise(pool)
    affine = draw_affines(0.03, torch.Generator().manual_seed(1)).a1
    a, b = views(
        net,
        img,
        engine_params(cl_aug={"geometric": True}),
        torch.Generator(),
        0.03,
        "zero",
        [affine],
    )
    inner = (
        (..., slice(3, -3), slice(3, -3), slice(3, -3))
        if pool
        else (..., slice(8, -8), slice(8, -8), slice(8, -8))
    )
    err = (a - b)[inner].abs().max() / a[inner].abs().max()
    assert err < (0.1 if pool else 1e-4)  # exact without pooling; interpolation error with it


def test_sampled_locations_respect_mask_and_border():
    img = torch.full((1, 1, 64, 64, 64), -2.0)
    img[..., 8:40, 16:56, 4:60] = 0.5  # foreground block
    p = engine_params(cl_border=5, cl_fg_threshold=-1.5, cl_sampling_variant="fixed")
    loc = sample_locations(img, (16, 16, 16), 1000, p, torch.Generator().manual_seed(0))
    assert ((loc >= 5) & (loc <= 10)).all()
    small = F.interpolate(img, size=(16, 16, 16), mode="trilinear", align_corners=False)[0, 0]
    assert (small[loc[:, 0], loc[:, 1], loc[:, 2]] > -1.5).all()
    assert len({tuple(x) for x in loc.tolist()}) == len(loc)  # unique
    era = sample_locations(
        img,
        (16, 16, 16),
        300,
        p.replace(cl_sampling_variant="paper_era"),
        torch.Generator().manual_seed(0),
    )
    assert len(era) == 300 and ((era >= 5) & (era <= 10)).all()
    assert (
        len({tuple(x) for x in era.tolist()}) < 300
    )  # duplicates weight voxels by foreground fraction


def test_alpha_schedules():
    linear = engine_params(cl_weight=10.0, cl_weight_schedule="linear_decay")
    assert cl_weight(0, 8000, linear) == 10.0
    assert cl_weight(4000, 8000, linear) == 5.0
    assert cl_weight(7999, 8000, linear) == pytest.approx(0.00125)
    constant = engine_params(cl_weight=5.0, cl_weight_schedule="constant")
    assert {cl_weight(i, 8000, constant) for i in (0, 4000, 7999)} == {5.0}


def test_bezier_intensity_is_monotone_and_keeps_the_range():
    img = torch.linspace(-1, 2, 1000).view(1, 1, 10, 10, 10)
    gen = torch.Generator().manual_seed(3)
    out = None
    for _ in range(10):  # probability 0.5: some draws leave the image unchanged
        out = bezier_intensity(img, gen)
        if not torch.equal(out, img):
            break
    assert not torch.equal(out, img)
    flat = out.flatten()
    assert (flat[1:] >= flat[:-1] - 1e-6).all()
    assert flat.min() >= -1 - 1e-5 and flat.max() <= 2 + 1e-5


def test_cl_only_keeps_g_frozen_during_registration_training(tmp_path):
    from corereg.training.selftrain import Trainer, load_data

    root = tmp_path / "prep"
    generate_abdomen(root, "d", (32, 32, 32), (12.0, 12.0, 12.0), 3, 2, seed=3)
    data = load_data(load_manifest(root), list(range(1, 14)), 1)
    p = engine_params(
        **{
            "contrastive": True,
            "contrastive_mode": "pretrain_frozen",
            "cl_pretrain_iters": 2,
            "stages": 1,
            "iters_per_stage": 3,
            "val_every": 3,
            "val_pairs": 1,
            "adam_iters": 3,
            "label_crop_border": 2,
            "cl_border": 1,
            "cl_num_samples": 40,
        },
    )
    snapshots = []

    class Spy(Trainer):
        def _freeze_g(self):
            if not snapshots:
                snapshots.append({k: v.clone() for k, v in self.net.state_dict().items()})
            super()._freeze_g()

    final = Spy(data, p, 0, torch.device("cpu"), tmp_path / "m", log=lambda *_: None).run()
    after = torch.load(final, weights_only=False)["model"]
    before = snapshots[0]
    g_keys = [k for k in before if int(k.split(".")[0]) < 12]
    p_keys = [k for k in before if int(k.split(".")[0]) >= 12 and k.endswith("weight")]
    assert all(torch.equal(before[k], after[k]) for k in g_keys)  # weights and BN statistics
    assert any(not torch.equal(before[k], after[k]) for k in p_keys)  # P was trained


def _smooth_image(shape=(48, 48, 48), seed=0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    return torch.from_numpy(ndimage.gaussian_filter(rng.normal(size=shape), 4).astype(np.float32))[
        None, None
    ]


def test_after_conv4_completes_the_forward_pass():
    torch.manual_seed(0)
    net = FeatureNet().eval()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net.after_conv4(net.conv4(x)), net(x), atol=1e-6)


def test_listing1_view_b_matches_the_registration_view_for_an_equivariant_network():
    """Listing 1: view A is the conv4 output of the registration input (the image moved by
    the registration affine); view B moves the original's features by the same affine."""
    torch.manual_seed(0)
    net = Pointwise(False)
    fixed, moving = _smooth_image(seed=0), _smooth_image(seed=1)
    aff = draw_affines(0.03, torch.Generator().manual_seed(1))
    shape = fixed.shape[2:]
    fa = net.conv4(augment_image(fixed, affine_grid(aff.a1, shape, "cpu"), "zero"))
    ma = net.conv4(augment_image(moving, affine_grid(aff.a2, shape, "cpu"), "zero"))
    # the loss is InfoNCE between view A and the original's features moved by the same affines
    p = engine_params(
        cl_aug={"geometric": True}, cl_num_samples=100, cl_border=8, cl_fg_threshold=-1e9
    )
    loss = contrastive_loss_listing1(
        net, fa, ma, [(fixed, moving)], [aff], p, torch.Generator().manual_seed(0)
    )
    gen = torch.Generator().manual_seed(0)
    fshape = fa.shape[2:]
    fb = F.grid_sample(net.conv4(fixed), affine_grid(aff.a1, fshape, "cpu"), align_corners=False)
    mb = F.grid_sample(net.conv4(moving), affine_grid(aff.a2, fshape, "cpu"), align_corners=False)
    loc_f = sample_locations(fixed, fshape, 100, p, gen)
    loc_m = sample_locations(moving, fshape, 100, p, gen)
    expected = info_nce(
        [gather(fa, loc_f), gather(ma, loc_m)], [gather(fb, loc_f), gather(mb, loc_m)], p
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # and directly: the transformed original features equal the features of the moved image
    base = F.grid_sample(net.conv4(fixed), affine_grid(aff.a1, shape, "cpu"), align_corners=False)
    inner = (..., slice(8, -8), slice(8, -8), slice(8, -8))
    assert (base - fa)[inner].abs().max() / fa[inner].abs().max() < 1e-4


@pytest.mark.parametrize("grad", [True, False])
def test_view_b_gradient_switch(grad):
    torch.manual_seed(0)
    net = FeatureNet()
    img = torch.randn(1, 1, 32, 32, 32)
    p = engine_params(cl_aug={"geometric": True}, cl_view_b_grad=grad)
    a, b = views(net, img, p, torch.Generator().manual_seed(0), 0.02, "minimum")
    assert a.requires_grad
    assert b.requires_grad is grad


def test_contrastive_switch_combinations_that_cannot_work_are_refused():
    base = engine_params(cl_aug={"geometric": True, "intensity": False})
    check_params(base)
    check_params(base.replace(cl_views="listing1"))
    check_params(engine_params(cl_aug={"geometric": False, "deformable": True}))
    check_params(base.replace(cl_feature_layer="post_relu_proj"))
    with pytest.raises(CoreregError, match="deformable view replaces the geometric one"):
        check_params(engine_params(cl_aug={"geometric": True, "deformable": True}))
    with pytest.raises(CoreregError, match="needs cl_feature_layer conv4_pre_bn"):
        check_params(base.replace(cl_views="listing1", cl_feature_layer="post_relu_proj"))
    with pytest.raises(CoreregError, match="listing1"):
        check_params(engine_params(cl_aug={"intensity": True}, cl_views="listing1"))
    with pytest.raises(CoreregError, match=r"engine\.cl_views: 'both' is not one of"):
        base.replace(cl_views="both")


def test_deformable_view_is_smooth_of_the_stated_size_and_moves_both_views():
    from corereg.registration.fields import identity_grid
    from corereg.training.contrastive import elastic_grid

    shape = (40, 40, 40)
    grid = elastic_grid(shape, torch.Generator().manual_seed(3), "cpu")
    assert grid.shape == (1, *shape, 3)
    disp = (grid - identity_grid(shape))[0] * (torch.tensor(shape[::-1]) - 1) / 2  # voxels
    inner = disp[8:-8, 8:-8, 8:-8]
    # smoothed U(-1, 1) noise (sigma 3..6) times 384..512: a few voxels, varying slowly
    assert 0.3 < float(inner.abs().mean()) < 20
    step = (inner[1:] - inner[:-1]).abs().mean() / inner.abs().mean()
    assert float(step) < 0.5  # white noise: about 1.1
    again = elastic_grid(shape, torch.Generator().manual_seed(3), "cpu")
    assert torch.equal(grid, again)  # drawn from the generator only
    # a pointwise network sees the same move in view A (image) and view B (features)
    rng = np.random.default_rng(0)
    from scipy import ndimage

    img = torch.from_numpy(ndimage.gaussian_filter(rng.normal(size=shape), 4).astype(np.float32))[
        None, None
    ]
    p = engine_params(cl_aug={"geometric": False, "deformable": True})
    net = Pointwise(False)
    with torch.no_grad():
        a, b = views(net, img, p, torch.Generator().manual_seed(5), 0.03, "zero")
    c = (..., slice(8, -8), slice(8, -8), slice(8, -8))
    assert float((a - b)[c].abs().max() / a[c].abs().max()) < 1e-4
    with torch.no_grad():
        plain = net.conv4(img)
    assert float((a - plain)[c].abs().max() / a[c].abs().max()) > 1e-2  # it did move


def test_post_relu_projection_features_come_from_block_4_and_a_trained_conv():
    from corereg.training.contrastive import contrastive_net

    torch.manual_seed(0)
    net = FeatureNet((8, 8, 16, 16), (2, 1, 2, 1), (16, 4))
    proj = torch.nn.Conv3d(16, 16, 1)
    x = torch.randn(1, 1, 16, 16, 16)
    feats = contrastive_net(net, proj).conv4(x)
    expect = proj(torch.relu(net[10](net.conv4(x))))
    assert torch.allclose(feats, expect, atol=1e-6)
    assert contrastive_net(net, None) is net


@pytest.mark.parametrize("views_mode,grad", [("listing1", False), ("listing1", True)])
def test_listing1_training_is_deterministic_and_trains_g(tmp_path, views_mode, grad):
    from corereg.training.selftrain import Trainer, load_data

    root = tmp_path / "prep"
    generate_abdomen(root, "d", (32, 32, 32), (12.0, 12.0, 12.0), 3, 2, seed=3)
    data = load_data(load_manifest(root), list(range(1, 14)), 1)
    p = engine_params(
        **{
            "contrastive": True,
            "cl_views": views_mode,
            "cl_view_b_grad": grad,
            "stages": 1,
            "iters_per_stage": 2,
            "val_every": 2,
            "val_pairs": 1,
            "adam_iters": 2,
            "label_crop_border": 2,
            "cl_border": 1,
            "cl_num_samples": 40,
        },
    )
    runs = []
    for k in range(2):
        tr = Trainer(data, p, 0, torch.device("cpu"), tmp_path / f"m{k}", log=lambda *_: None)
        runs.append(torch.load(tr.run(), weights_only=False)["model"])
        assert all(np.isfinite(r["loss"]) and np.isfinite(r["loss_cl"]) for r in tr.rows)
    assert all(torch.equal(runs[0][key], runs[1][key]) for key in runs[0])
