"""The engine's registration of a pair: H with ICE,
double warping with composition, Adam instance optimisation.

Used for pseudo-labels during training, for validation, and at test time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from corereg.device import amp_active, amp_dtype
from corereg.params import EngineParams
from corereg.registration import adam as adam_mod
from corereg.registration import convex
from corereg.registration.fields import compose, warp


def prepare_input(hu: torch.Tensor, p: EngineParams, clamp) -> torch.Tensor:
    """HU -> network input: HU · hu_scale (1/500), optionally clamped to ``clamp``."""
    x = hu * p.hu_scale
    return x.clamp(clamp[0], clamp[1]) if clamp else x


def autocast(device: torch.device, enabled: bool):
    """The networks' AMP scope: float16 on CUDA when ``enabled`` (engine.amp); off on the
    CPU unless :data:`corereg.device.AMP_CPU_DTYPE` turns it on (bfloat16, for tests)."""
    return torch.autocast(
        device_type=device.type,
        dtype=amp_dtype(device),
        enabled=amp_active(device, enabled),
    )


@dataclass
class PairResult:
    net: torch.Tensor  # normalised field after H (+ double warp), (1, 3, H, W, D)
    adam: torch.Tensor | None = None
    passes: list[torch.Tensor] | None = None  # the field of each warp pass, before composition


def network_passes(net, fix_in, mov_in, p: EngineParams, ice: bool, clamp, out_shape=None):
    """H(P∘G(fixed), P∘G(moving)) followed by ``num_warps - 1`` extra passes on the
    nearest-neighbour warped moving image: (composed field, [field of each pass])."""
    out_shape = out_shape or fix_in.shape[2:]
    dev = fix_in.device
    with torch.no_grad(), autocast(dev, p.amp):
        # computed once: the network is in eval mode, so it is the same each warp
        feat_fix = net(fix_in)
        field = convex.optimise(feat_fix, net(mov_in), out_shape, ice, p)
        passes = [field.float()]
        for _ in range(p.num_warps - 1):
            moved = warp(mov_in.float(), field, mode="nearest")
            if clamp:
                moved = moved.clamp(clamp[0], clamp[1])
            second = convex.optimise(feat_fix, net(moved.to(mov_in.dtype)), out_shape, ice, p)
            passes.append(second.float())
            field = compose(field, second, p.compose_order)
    return field.float(), passes


def network_field(
    net, fix_in, mov_in, p: EngineParams, ice: bool, clamp, out_shape=None
) -> torch.Tensor:
    """The composed field of :func:`network_passes`."""
    return network_passes(net, fix_in, mov_in, p, ice, clamp, out_shape)[0]


def adam_field(
    net, fix_in, mov_in, field, reg_fac, p: EngineParams, generator, hu=None, timings=None
) -> torch.Tensor:
    """Adam IO on 5·R(G₂(·)) (``adam_feat: random_projection``) or on 5·↓2(MIND-SSC(HU))
    (``adam_feat: mind``, the code's --use_mind option; needs ``hu`` = (fixed, moving) HU)."""
    scale = p.feat_scale
    if p.adam_feat == "mind":
        from convexAdam.convex_adam_utils import MINDSSC

        if hu is None:
            raise ValueError("adam_feat 'mind' needs the HU images")
        with torch.no_grad():
            ff, fm = (
                scale * F.avg_pool3d(MINDSSC(x.float(), 1, 2, device=str(x.device)), 2) for x in hu
            )
        return adam_mod.adam_refine(ff, fm, field, reg_fac, p, timings=timings)
    with torch.no_grad(), autocast(fix_in.device, p.amp):
        g2f, g2m = net.g2(fix_in), net.g2(mov_in)
    ff, fm = adam_mod.adam_features(g2f, g2m, generator, scale)
    return adam_mod.adam_refine(ff, fm, field, reg_fac, p, timings=timings)


def register_pair(
    net,
    fixed_hu,
    moving_hu,
    p: EngineParams,
    *,
    ice=True,
    clamp=None,
    use_adam=True,
    reg_fac=1.0,
    generator=None,
) -> PairResult:
    """The full refinement of one pair; inputs are (1, 1, H, W, D) HU tensors on the device."""
    net.eval()
    fix_in, mov_in = prepare_input(fixed_hu, p, clamp), prepare_input(moving_hu, p, clamp)
    field, passes = network_passes(net, fix_in, mov_in, p, ice, clamp)
    if not use_adam:
        return PairResult(field, passes=passes)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    adam = adam_field(net, fix_in, mov_in, field, reg_fac, p, gen, (fixed_hu, moving_hu))
    return PairResult(field, adam, passes)


def half(field: torch.Tensor) -> torch.Tensor:
    """Pseudo-label storage: trilinear ↓½ of a full-resolution normalised field."""
    return F.interpolate(field, scale_factor=0.5, mode="trilinear", align_corners=False)


def check_shape(shape, where) -> None:
    from corereg.voxels import ENGINE_SIZE_MULTIPLE, check_size_multiple

    check_size_multiple(shape, ENGINE_SIZE_MULTIPLE, where)
