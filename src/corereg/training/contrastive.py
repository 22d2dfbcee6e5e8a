"""The equivariance contrastive loss of CoRe (docs/method.md).

View A: G's raw 4th-convolution output of a transformed image; view B: the
original image's features transformed the same way at feature resolution.
Sampled feature vectors at the same locations of both views are positives of an
InfoNCE loss.  Paper and code disagree on the form (docs/method.md, 'Paper and released code:
every difference and its switch'); every difference is a key of ``engine``:

* ``cl_normalize`` (code: cosine, paper: inner product),
* ``cl_negatives`` (code ``view_b_batch``: the other view-B vectors of the whole
  batch; paper ``both_views``: the 2(n−1) other vectors of both views of the same image),
* ``cl_reduction`` (code ``mean``, paper ``sum``),
* ``cl_weight_schedule`` (code ``linear_decay`` 10·(1 − i/T), paper ``constant`` α),
* ``cl_sampling_variant`` (``fixed``: unique foreground feature voxels per image;
  ``paper_era``: the fixed image's full-resolution mask divided by 4, duplicates
  weighting voxels by foreground fraction, the moving image reusing the locations),
* ``cl_views`` (code ``separate``: an independent affine draw of strength
  ``aug_strength_cl`` and two extra ``conv4`` passes per image; ``listing1``: the
  paper's Listing 1, view A is the registration forward's own ``conv4`` output of
  the registration-augmented image, view B the original's features moved by the
  registration augmentation, one extra pass per image),
* ``cl_view_b_grad`` (code ``true``; ``false`` treats view B as a fixed target:
  its pass runs without gradient, which makes ``listing1`` cost one forward pass).

Image and feature grids are transformed consistently: the same normalised affine
(align_corners=False) is sampled at image and at feature resolution, so a
pointwise network is equivariant up to interpolation error (tested).  The code
warps the image with align_corners=True and resamples the grid; that sub-voxel
quirk is not reproduced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from corereg.params import EngineParams
from corereg.registration.fields import identity_grid
from corereg.training.augment import affine_grid, augment_image, draw_affines


# ----------------------------------------------------------------------------- weight
def cl_weight(i: int, total: int, p: EngineParams) -> float:
    """α at iteration i of T: constant α, or the code's linear decay α·(1 − i/T)."""
    alpha = p.cl_weight
    if p.cl_weight_schedule == "constant":
        return alpha
    return alpha * (1.0 - i / max(total, 1))


# ----------------------------------------------------------------------------- T_i
def bezier_intensity(
    image: torch.Tensor, generator: torch.Generator, prob: float = 0.5, samples: int = 100_000
) -> torch.Tensor:
    """Models-Genesis-style monotone Bézier curve on the min-max scaled image (probability ``prob``)."""
    if float(torch.rand((), generator=generator, device="cpu")) >= prob:
        return image
    lo, hi = image.min(), image.max()
    x = (image - lo) / (hi - lo + 1e-8)
    r = torch.rand(4, generator=generator, dtype=torch.float64, device="cpu")
    t = torch.linspace(0, 1, samples, dtype=torch.float64, device="cpu")
    b1, b2, b3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    xs = torch.sort(b1 * r[0] + b2 * r[2] + b3).values.to(image.device, image.dtype)
    ys = torch.sort(b1 * r[1] + b2 * r[3] + b3).values.to(image.device, image.dtype)
    idx = torch.searchsorted(xs, x.reshape(-1).contiguous()).clamp(1, samples - 1)
    x0, x1, y0, y1 = xs[idx - 1], xs[idx], ys[idx - 1], ys[idx]
    frac = ((x.reshape(-1) - x0) / (x1 - x0 + 1e-12)).clamp(0, 1)
    y = (y0 + frac * (y1 - y0)).view_as(x)
    return y * (hi - lo) + lo


# ----------------------------------------------------------------------------- locations
def _border_ok(idx: torch.Tensor, shape, border: int) -> torch.Tensor:
    upper = torch.tensor(shape, device=idx.device) - 1 - border
    return ((idx >= border) & (idx <= upper)).all(1)


def sample_locations(
    image: torch.Tensor, feat_shape, n: int, p: EngineParams, generator: torch.Generator
) -> torch.Tensor:
    """(k, 3) feature-grid indices in the foreground (input > cl_fg_threshold) away from the border.

    ``fixed``: unique foreground feature voxels of the image downsampled to the
    feature grid, k = min(n, available), drawn without replacement.
    ``paper_era``: full-resolution foreground voxels divided by the stride, so each
    feature voxel appears once per foreground voxel; n entries drawn without replacement.
    """
    thr, border, variant = p.cl_fg_threshold, p.cl_border, p.cl_sampling_variant
    if variant == "fixed":
        small = F.interpolate(image, size=tuple(feat_shape), mode="trilinear", align_corners=False)
        idx = torch.nonzero(small[0, 0] > thr)
    elif variant == "paper_era":
        stride = image.shape[2] // feat_shape[0]
        idx = torch.nonzero(image[0, 0] > thr) // stride
    else:
        raise ValueError(f"cl_sampling_variant must be 'fixed' or 'paper_era', not '{variant}'")
    idx = idx[_border_ok(idx, feat_shape, border)]
    if idx.shape[0] == 0:
        from corereg.errors import CoreregError

        raise CoreregError(
            f"no foreground feature voxel at least cl_border={border} voxels from the border "
            f"of the {tuple(feat_shape)} feature grid; lower engine.cl_border"
        )
    order = torch.randperm(idx.shape[0], generator=generator, device="cpu")[: min(n, idx.shape[0])]
    return idx[order.to(idx.device)]


def gather(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(k, C) feature vectors of a (1, C, h, w, d) map at (k, 3) indices."""
    return features[0][:, idx[:, 0], idx[:, 1], idx[:, 2]].T


# ----------------------------------------------------------------------------- InfoNCE
def info_nce(a: list[torch.Tensor], b: list[torch.Tensor], p: EngineParams) -> torch.Tensor:
    """InfoNCE over groups (one per image) of matched rows of view A and view B.

    ``view_b_batch`` (code): one N×N problem over all groups, anchors A, keys B.
    ``both_views`` (paper Eq. 3): per group, anchor a_j, positive b_j, negatives
    a_k and b_k for k ≠ j.  ``cl_normalize`` L2-normalises vectors (cosine);
    ``cl_reduction`` takes the mean or the sum over anchors.
    """
    tau = p.cl_temperature
    if p.cl_normalize:
        a = [F.normalize(x.float(), dim=1) for x in a]
        b = [F.normalize(x.float(), dim=1) for x in b]
    else:
        a, b = [x.float() for x in a], [x.float() for x in b]
    negatives = p.cl_negatives
    if negatives == "view_b_batch":
        qa, kb = torch.cat(a), torch.cat(b)
        logits = qa @ kb.T / tau
        losses = F.cross_entropy(logits, torch.arange(len(qa), device=qa.device), reduction="none")
    elif negatives == "both_views":
        losses = []
        for ga, gb in zip(a, b, strict=True):
            n = len(ga)
            pos = (ga * gb).sum(1, keepdim=True) / tau
            aa = ga @ ga.T / tau
            ab = ga @ gb.T / tau
            eye = torch.eye(n, dtype=torch.bool, device=ga.device)
            neg = torch.cat(
                [aa.masked_fill(eye, float("-inf")), ab.masked_fill(eye, float("-inf"))], 1
            )
            losses.append(torch.logsumexp(torch.cat([pos, neg], 1), 1) - pos[:, 0])
        losses = torch.cat(losses)
    else:
        raise ValueError(f"cl_negatives must be 'view_b_batch' or 'both_views', not '{negatives}'")
    return losses.sum() if p.cl_reduction == "sum" else losses.mean()


# ----------------------------------------------------------------------------- the loss
def _base(net, images: torch.Tensor, p: EngineParams) -> torch.Tensor:
    """G's conv4 output of the original images (the source of view B)."""
    if p.cl_view_b_grad:
        return net.conv4(images)
    with torch.no_grad():
        return net.conv4(images)


def _feature_grid(move: torch.Tensor, shape, device) -> torch.Tensor:
    """The sampling grid of one view-A move at feature resolution: an affine (4, 4) is
    sampled there; a deformable view's normalised grid (1, H, W, D, 3) is resized."""
    if move.dim() == 2:
        return affine_grid(move, shape, device)
    grid = F.interpolate(
        move.permute(0, 4, 1, 2, 3), size=tuple(shape), mode="trilinear", align_corners=False
    )
    return grid.permute(0, 2, 3, 4, 1)


def move_features(base: torch.Tensor, moves) -> torch.Tensor:
    """View B: feature maps moved by one affine (or deformable grid) each, sampled at
    feature resolution."""
    grid = torch.cat([_feature_grid(m, base.shape[2:], base.device) for m in moves])
    return F.grid_sample(base, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# The code's deformable view (batchgenerators' elastic deformation): magnitude and smoothness.
ELASTIC_ALPHA = (384.0, 512.0)
ELASTIC_SIGMA = (3.0, 6.0)


def _gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian of (C, H, W, D), kernel radius 4 sigma, zeros outside."""
    radius = int(4 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    out = x[:, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(k)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad), k.view(shape))
    return out[:, 0]


def elastic_grid(shape, generator: torch.Generator, device) -> torch.Tensor:
    """(1, H, W, D, 3) normalised sampling grid of the code's deformable view: uniform
    noise in [-1, 1] per voxel and axis, Gaussian-smoothed with sigma ~ U(3, 6), times
    alpha ~ U(384, 512), in voxels; normalised with n - 1 per axis (the code's random
    affine of the same draw is discarded, as there)."""
    u = torch.rand(2, generator=generator, dtype=torch.float64, device="cpu")
    sigma = ELASTIC_SIGMA[0] + float(u[0]) * (ELASTIC_SIGMA[1] - ELASTIC_SIGMA[0])
    alpha = ELASTIC_ALPHA[0] + float(u[1]) * (ELASTIC_ALPHA[1] - ELASTIC_ALPHA[0])
    noise = torch.rand(3, *shape, generator=generator, device="cpu") * 2 - 1
    disp = _gaussian_smooth(noise, sigma) * alpha  # voxels along axes 0, 1, 2
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in shape], device="cpu").view(3, 1, 1, 1)
    norm = (disp * scale).flip(0).permute(1, 2, 3, 0)[None]  # grid order (x, y, z) = (2, 1, 0)
    return (identity_grid(tuple(shape)) + norm).to(device)


class ProjectedFeatures:
    """The pre-December-2024 contrastive features (``cl_feature_layer: post_relu_proj``):
    a 1x1x1 convolution (``proj``, trained with the network) on G's post-ReLU output of
    block 4, in place of the raw 4th convolution.  Stands in for the network in the
    contrastive functions (they call ``conv4``)."""

    def __init__(self, net, proj):
        self.net, self.proj = net, proj

    def conv4(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.net.prefix(x, 12))


def contrastive_net(net, proj):
    """What the contrastive functions read features from: the network, or its projection."""
    return net if proj is None else ProjectedFeatures(net, proj)


def check_params(p: EngineParams) -> None:
    """Reject contrastive settings that are named in the config but not implemented."""
    from corereg.errors import CoreregError

    aug = p.cl_aug
    if aug.deformable and aug.geometric:
        raise CoreregError(
            "engine.cl_aug: the deformable view replaces the geometric one (as in the released "
            "code, where it is used only without it): set geometric false with deformable true"
        )
    if p.cl_views == "listing1" and (aug.intensity or not aug.geometric):
        raise CoreregError(
            "engine.cl_views 'listing1' takes view A from the registration input, which has only "
            "the geometric augmentation: it needs cl_aug {geometric: true, intensity: false}"
        )
    if p.cl_views == "listing1" and p.cl_feature_layer != "conv4_pre_bn":
        raise CoreregError(
            "engine.cl_views 'listing1' reuses the registration forward's conv4 output as view "
            "A: it needs cl_feature_layer conv4_pre_bn"
        )


def view_a_input(
    images: torch.Tensor,
    p: EngineParams,
    generator: torch.Generator,
    strength: float,
    pad: str,
    affines=None,
) -> tuple[torch.Tensor, list | None]:
    """The augmented images whose conv4 output is view A (intensity, then the affine move,
    or the deformable one), and the moves used (None without a spatial augmentation)."""
    aug = p.cl_aug
    x = images
    if aug.intensity:
        x = torch.cat([bezier_intensity(img[None], generator) for img in images])
    if aug.deformable:
        grids = [elastic_grid(images.shape[2:], generator, images.device) for _ in images]
        moved = torch.cat([augment_image(x[k : k + 1], g, pad) for k, g in enumerate(grids)])
        return moved, grids
    if not aug.geometric:
        return x, None
    if affines is None:
        affines = [draw_affines(strength, generator).a1 for _ in range(len(images))]
    shape = images.shape[2:]
    moved = torch.cat(
        [
            augment_image(x[k : k + 1], affine_grid(a, shape, images.device), pad)
            for k, a in enumerate(affines)
        ]
    )
    return moved, affines


def view_b(net, images: torch.Tensor, p: EngineParams, affines) -> torch.Tensor:
    """View B: the original images' conv4 output, moved by the view-A affines (if any)."""
    base = _base(net, images, p)
    return base if affines is None else move_features(base, affines)


def views(
    net,
    images: torch.Tensor,
    p: EngineParams,
    generator: torch.Generator,
    strength: float,
    pad: str,
    affines=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(view A, view B) feature maps of a batch of network inputs (B, 1, H, W, D).

    One ``conv4`` call per view over the whole batch, as the code does (its
    BatchNorm statistics are batch statistics over the pairs of a training batch).
    ``affines``: one 4x4 matrix per image (drawn if None).
    """
    x, used = view_a_input(images, p, generator, strength, pad, affines)
    return net.conv4(x), view_b(net, images, p, used)


def contrastive_loss(
    net, pairs: list[tuple[torch.Tensor, torch.Tensor]], p: EngineParams, generator: torch.Generator
) -> torch.Tensor:
    """L_c over a batch of (fixed, moving) network inputs, with independent affine draws
    (A1 for the fixed image, A2 = A2raw·A1 for the moving one, strength ``aug_strength_cl``);
    fixed images and moving images each pass G as one batch (4 partial passes per iteration).

    The passes run in the released code's order (fixed augmented, moving augmented, fixed
    original, moving original): in training mode each pass updates BatchNorm's running
    statistics, which the network then uses in evaluation mode."""
    strength, pad = p.aug_strength_cl, p.pad_value_aug
    affs = [draw_affines(strength, generator) for _ in pairs]
    fixed = torch.cat([f for f, _ in pairs])
    moving = torch.cat([m for _, m in pairs])
    xf, used_f = view_a_input(fixed, p, generator, strength, pad, [a.a1 for a in affs])
    xm, used_m = view_a_input(moving, p, generator, strength, pad, [a.a2 for a in affs])
    fa, ma = net.conv4(xf), net.conv4(xm)
    fb, mb = view_b(net, fixed, p, used_f), view_b(net, moving, p, used_m)
    return _sampled_loss(fa, fb, ma, mb, fixed, moving, p, generator)


def contrastive_loss_listing1(
    net,
    view_a_fixed: torch.Tensor,
    view_a_moving: torch.Tensor,
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    affines,
    p: EngineParams,
    generator: torch.Generator,
) -> torch.Tensor:
    """L_c with the paper's Listing 1 views: view A is the registration forward's conv4
    output of the augmented batch (passed in, so it costs nothing), view B the
    original images' conv4 output moved by the same affines (A1 fixed, A2 moving)."""
    fixed = torch.cat([f for f, _ in pairs])
    moving = torch.cat([m for _, m in pairs])
    fb = move_features(_base(net, fixed, p), [a.a1 for a in affines])
    mb = move_features(_base(net, moving, p), [a.a2 for a in affines])
    return _sampled_loss(view_a_fixed, fb, view_a_moving, mb, fixed, moving, p, generator)


def _sampled_loss(fa, fb, ma, mb, fixed, moving, p: EngineParams, generator) -> torch.Tensor:
    n = p.cl_num_samples
    shape = fa.shape[2:]
    pairs = range(len(fixed))
    ga, gb = [], []
    for k in pairs:
        loc_f = sample_locations(fixed[k : k + 1], shape, n, p, generator)
        if p.cl_sampling_variant == "paper_era":
            loc_m = loc_f[
                torch.randperm(len(loc_f), generator=generator, device="cpu").to(loc_f.device)
            ]
        else:
            loc_m = sample_locations(moving[k : k + 1], shape, n, p, generator)
        ga += [gather(fa[k : k + 1], loc_f), gather(ma[k : k + 1], loc_m)]
        gb += [gather(fb[k : k + 1], loc_f), gather(mb[k : k + 1], loc_m)]
    return info_nce(ga, gb, p)
