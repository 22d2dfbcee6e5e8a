"""The registration engine: known answers for H, ICE, composition, Adam, augmentation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from conftest import engine_params
from corereg.errors import CoreregError, InputError
from corereg.registration import adam as adam_mod
from corereg.registration import convex, fastwarp, network
from corereg.registration.fields import compose, from_voxels, identity_grid, to_voxels, warp
from corereg.registration.pipeline import register_pair
from corereg.training.augment import Affines, adjust_label_code, adjust_label_exact, draw_affines

P = engine_params(feat_scale=5.0)


def smooth_image(shape, sigma, seed):
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return (img / img.std()).astype(np.float32)


def pooled_features(img: np.ndarray) -> torch.Tensor:
    """Hand-crafted features at 1/8: pooled intensity, magnitude and positive part."""
    x = torch.from_numpy(img)[None, None]
    return torch.cat(
        [F.avg_pool3d(x, 8), F.avg_pool3d(x.abs(), 8), F.avg_pool3d(torch.relu(x), 8)], 1
    )


def test_network_shapes_and_named_outputs():
    net = network.FeatureNet().eval()
    x = torch.randn(1, 1, 32, 24, 40)
    assert net(x).shape == (1, 16, 4, 3, 5)
    assert net.g2(x).shape == (1, 64, 16, 12, 20)
    c4 = net.conv4(x)
    assert c4.shape == (1, 128, 8, 6, 10)
    assert c4.min() < 0  # the raw convolution, before BN and ReLU
    assert len(net) == 16


def test_h_recovers_an_integer_feature_shift():
    # A shift of exactly (1, -1, 1) feature voxels; H's output carries the code's n/(n-1)
    # normalisation factor (docs/method.md), so expect shift * n/(n-1) without ICE.
    shape = (64, 64, 64)
    fixed = smooth_image(shape, 5, 0)
    shift = np.array([8.0, -8.0, 8.0])
    moving = ndimage.shift(fixed, shift, order=1, mode="nearest")
    u = convex.optimise(
        pooled_features(fixed), pooled_features(moving.astype(np.float32)), shape, False, P
    )
    centre = to_voxels(u)[32, 32, 32].numpy()
    np.testing.assert_allclose(centre, shift * 8 / 7, atol=0.3)


def test_h_recovers_a_smooth_displacement():
    shape = (96, 96, 96)
    rng = np.random.default_rng(1)
    coarse = rng.normal(size=(3, 3, 3, 3))
    true = (
        np.stack([ndimage.zoom(coarse[k], 32, order=3) for k in range(3)], -1).astype(np.float32)
        * 10
    )
    moving = smooth_image(shape, 6, 2)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    fixed = ndimage.map_coordinates(
        moving, grid + np.moveaxis(true, -1, 0), order=3, mode="nearest"
    )
    u = convex.optimise(
        pooled_features(fixed.astype(np.float32)), pooled_features(moving), shape, False, P
    )
    inner = (slice(16, -16),) * 3
    epe = np.linalg.norm(to_voxels(u).numpy() - true, axis=-1)[inner].mean()
    magnitude = np.linalg.norm(true, axis=-1)[inner].mean()
    assert magnitude > 8
    assert epe < 0.4 * magnitude  # stated bound: 40% of the motion, on a grid of 8-voxel labels


def test_inverse_consistency_makes_forward_and_backward_inverse():
    torch.manual_seed(0)
    shape = (12, 10, 14)
    f = F.interpolate(0.1 * torch.randn(1, 3, 3, 3, 3), size=shape, mode="trilinear")
    b = F.interpolate(0.1 * torch.randn(1, 3, 3, 3, 3), size=shape, mode="trilinear")

    def residual(f, b):  # f + b∘(id + f) = 0 for exact inverses
        return (f + warp(b, f))[..., 2:-2, 2:-2, 2:-2].abs().mean().item()

    fi = convex.inverse_consistency(f, b, 15)
    bi = convex.inverse_consistency(b, f, 15)
    assert residual(fi, bi) < 0.1 * residual(f, b)


def test_composition_orders():
    torch.manual_seed(1)
    shape = (24, 24, 24)
    d0 = F.interpolate(
        0.15 * torch.randn(1, 3, 2, 2, 2), size=shape, mode="trilinear", align_corners=True
    )
    d1 = F.interpolate(
        0.15 * torch.randn(1, 3, 2, 2, 2), size=shape, mode="trilinear", align_corners=True
    )
    torch.testing.assert_close(compose(d0, d1, "code"), d0 + warp(d1, d0))
    torch.testing.assert_close(compose(d0, d1, "exact"), d1 + warp(d0, d1))
    # exact = what two sequential warps do (checked on a smooth image); code differs
    img = torch.from_numpy(smooth_image(shape, 5, 3))[None, None]
    sequential = warp(warp(img, d0), d1)
    inner = (..., slice(4, -4), slice(4, -4), slice(4, -4))
    err_exact = (warp(img, compose(d0, d1, "exact")) - sequential)[inner].abs().mean()
    err_code = (warp(img, compose(d0, d1, "code")) - sequential)[inner].abs().mean()
    assert err_exact < 0.5 * err_code
    # for translations both orders agree
    t0, t1 = torch.full((1, 3, *shape), 0.05), torch.full((1, 3, *shape), -0.02)
    c, e = compose(t0, t1, "code"), compose(t0, t1, "exact")
    torch.testing.assert_close(c[inner], e[inner])


def test_voxel_conversion_round_trip_and_convention():
    disp = torch.zeros(8, 6, 10, 3)
    disp[..., 0], disp[..., 2] = 2.0, -1.0
    u = from_voxels(disp)
    assert u.shape == (1, 3, 8, 6, 10)
    torch.testing.assert_close(to_voxels(u), disp)
    img = torch.arange(8 * 6 * 10, dtype=torch.float32).view(1, 1, 8, 6, 10)
    moved = warp(img, u, "nearest")
    assert moved[0, 0, 3, 3, 5] == img[0, 0, 5, 3, 4]  # p + (2, 0, -1)


def test_fused_warp_equals_grid_sample_loss_and_gradient():
    torch.manual_seed(2)
    shape = (10, 8, 12)
    mov, fix = torch.randn(1, 5, *shape), torch.randn(1, 5, *shape)
    grid = (identity_grid(shape) + 0.2 * torch.randn(1, *shape, 3)).requires_grad_(True)
    ref = ((F.grid_sample(mov, grid, align_corners=False) - fix) ** 2).mean(1).mean()
    ref.backward()
    g_ref, grid.grad = grid.grad.clone(), None
    out = fastwarp.warp_ssd(fastwarp.channels_last(mov), fastwarp.channels_last(fix), grid, shape)
    out.backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grid.grad, g_ref, rtol=1e-4, atol=1e-7)


def test_adam_lowers_its_objective_and_both_implementations_agree():
    torch.manual_seed(3)
    shape = (32, 32, 32)
    img = torch.from_numpy(smooth_image(shape, 3, 4))[None, None]
    shifted = torch.roll(img, shifts=(2, 0, -1), dims=(2, 3, 4))
    feats = lambda x: torch.cat([x, x**2, x.abs()], 1)  # noqa: E731
    ff = F.avg_pool3d(feats(img), 2)
    fm = F.avg_pool3d(feats(shifted), 2)
    history = []
    u = adam_mod.adam_refine(
        ff, fm, torch.zeros(1, 3, *shape), 1.0, engine_params(adam_iters=30), "fused", history
    )
    assert history[-1] < 0.5 * history[0]
    v = adam_mod.adam_refine(
        ff, fm, torch.zeros(1, 3, *shape), 1.0, engine_params(adam_iters=30), "grid_sample"
    )
    assert (to_voxels(u) - to_voxels(v)).abs().max() < 1e-3
    centre = to_voxels(u)[12:20, 12:20, 12:20].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(centre.numpy(), [2.0, 0.0, -1.0], atol=0.5)


def test_exact_label_adjustment_matches_the_analytic_formula():
    gen = torch.Generator().manual_seed(4)
    shape = (24, 20, 28)  # half resolution
    aff = draw_affines(0.05, gen)
    b = torch.tensor([[0.04, 0.01, 0.0], [0.0, -0.03, 0.02], [0.01, 0.0, 0.05]])
    c = torch.tensor([0.02, -0.03, 0.01])
    x = identity_grid(shape)  # (1, h, w, d, 3) normalised (x, y, z)
    label = (x @ b.T + c).permute(0, 4, 1, 2, 3)  # an affine pseudo-label: u(p) = B p + c
    got = adjust_label_exact(label, aff)
    a1, a2 = aff.a1.float(), aff.a2.float()
    y = x @ a1[:3, :3].T + a1[:3, 3]
    target = y + y @ b.T + c
    expected = ((target - a2[:3, 3]) @ torch.linalg.inv(a2[:3, :3]).T - x).permute(0, 4, 1, 2, 3)
    inside = (y.abs() < 0.9).all(-1)  # where A1 x stays inside the label's grid
    vox = torch.tensor([s / 2 for s in shape]).flip(0).view(1, 3, 1, 1, 1)
    err = ((got - expected) * vox).norm(dim=1)[inside]
    assert inside.float().mean() > 0.5
    assert err.max() < 0.1
    code = adjust_label_code(label, aff, tuple(2 * s for s in shape))
    assert ((code - expected) * vox).norm(dim=1)[inside].mean() > err.mean()


def test_identity_affines_keep_the_label():
    eye = torch.eye(4, dtype=torch.float64)
    label = F.interpolate(0.05 * torch.randn(1, 3, 3, 3, 3), size=(8, 8, 8), mode="trilinear")
    torch.testing.assert_close(
        adjust_label_exact(label, Affines(eye, eye)), label, atol=1e-5, rtol=0
    )


def test_register_pair_is_deterministic_on_the_cpu_and_rejects_bad_sizes():
    torch.manual_seed(5)
    net = network.FeatureNet().eval()
    fixed = torch.from_numpy(smooth_image((32, 24, 32), 2, 5) * 300)[None, None]
    moving = torch.roll(fixed, 2, dims=2)
    p = engine_params(adam_iters=5)
    a = register_pair(net, fixed, moving, p, generator=torch.Generator().manual_seed(0))
    b = register_pair(net, fixed, moving, p, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.adam, b.adam) and torch.equal(a.net, b.net)
    with pytest.raises(CoreregError, match=r"engine\.num_warps: 3 is not one of \[1, 2\]"):
        engine_params(num_warps=3)
    from corereg.registration.pipeline import check_shape

    with pytest.raises(CoreregError, match="divisible by 8"):
        check_shape((30, 24, 32), "x")


def test_checkpoint_of_another_architecture(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save(
        {
            "model": network.FeatureNet(channels=(8, 8, 8, 8)).state_dict(),
            "arch": network.FeatureNet().arch,
        },
        bad,
    )
    with pytest.raises(
        InputError, match=r"bad\.pt: checkpoint does not match the engine architecture"
    ):
        network.load_checkpoint(bad, torch.device("cpu"))
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(InputError, match="not a corereg engine checkpoint"):
        network.load_checkpoint(other, torch.device("cpu"))


def test_adam_on_mind_features_option():
    torch.manual_seed(6)
    net = network.FeatureNet().eval()
    fixed = torch.from_numpy(smooth_image((32, 24, 32), 2, 6) * 300)[None, None]
    moving = torch.roll(fixed, 2, dims=2)
    res = register_pair(net, fixed, moving, engine_params(adam_iters=10, adam_feat="mind"))
    assert res.adam.shape == (1, 3, 32, 24, 32) and torch.isfinite(res.adam).all()
    ref = register_pair(
        net, fixed, moving, engine_params(adam_iters=10), generator=torch.Generator().manual_seed(0)
    )
    assert not torch.equal(res.adam, ref.adam)
