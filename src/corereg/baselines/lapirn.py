"""LapIRN, displacement variant (Mok & Chung, MICCAI 2020), written for this pipeline.

No package exists; this is our implementation of the published design (the MIT
original ``cwmok/LapIRN`` was read, not copied):

* a three-level Laplacian image pyramid (1/4, 1/2, full resolution);
* one residual encoder-decoder per level whose input is the moving image warped by
  the (upsampled) coarser field, the fixed image and that field; it outputs a
  residual that is added to the field, so each level refines the coarser one;
* progressive training: level 1 alone, then level 2 on top (the coarser nets
  frozen for ``freeze_iters`` iterations), then level 3;
* at every level: negative local NCC (window ``ncc_window[level]``) plus
  ``lambda_smooth`` x the diffusion penalty of the field at that level's resolution.

Fields are in voxels of their level (doubled when upsampled), channel k along array
axis k, warp = pull at x + u(x): the Learn2Reg convention at full resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from corereg.baselines.learned import diffusion, local_ncc, voxel_warp

LEVELS = 3


def _conv(cin, cout, stride=1):
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))


class _Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(
            nn.LeakyReLU(0.2), nn.Conv3d(c, c, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv3d(c, c, 3, 1, 1)
        )

    def forward(self, x):
        return x + self.body(x)


class LevelNet(nn.Module):
    """Encoder (one stride-2 step), residual blocks, decoder with a skip, 3-channel output."""

    def __init__(self, c: int, n_res: int):
        super().__init__()
        self.enc = nn.Sequential(_conv(5, c), _conv(c, c))
        self.down = _conv(c, 2 * c, stride=2)
        self.res = nn.Sequential(*[_Res(2 * c) for _ in range(n_res)])
        self.up = nn.ConvTranspose3d(2 * c, c, 2, stride=2)
        self.dec = _conv(2 * c, c)
        self.out = nn.Conv3d(c, 3, 3, 1, 1)
        nn.init.normal_(self.out.weight, 0.0, 1e-5)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, coarse_feat=None):
        """Residual field and this level's embedding (input of the next level)."""
        skip = self.enc(x)
        y = self.down(skip)
        if coarse_feat is not None:  # LapIRN's feature sharing: the coarser level's embedding
            y = y + F.interpolate(
                coarse_feat, size=y.shape[2:], mode="trilinear", align_corners=False
            )
        feat = self.res(y)
        return self.out(self.dec(torch.cat([self.up(feat), skip], 1))), feat


def pyramid(x: torch.Tensor) -> list[torch.Tensor]:
    """The image at 1/4, 1/2 and full resolution (level order), each pooled from the next."""
    levels = [x]
    for _ in range(LEVELS - 1):
        levels.insert(0, F.avg_pool3d(levels[0], 2))
    return levels


def upsample_field(disp: torch.Tensor) -> torch.Tensor:
    return 2.0 * F.interpolate(disp, scale_factor=2, mode="trilinear", align_corners=False)


class LapIRN(nn.Module):
    """``params``: methods.<name>.params of kind lapirn, defaults filled in (the
    configuration schema holds them and where they come from)."""

    def __init__(self, params: dict):
        super().__init__()
        c, n_res = int(params["channels"]), int(params["n_res"])
        self.nets = nn.ModuleList([LevelNet(c, n_res) for _ in range(LEVELS)])
        self.level_iters = [int(n) for n in params["level_iterations"]]
        if len(self.level_iters) != LEVELS or min(self.level_iters) < 1:
            raise ValueError(
                f"lapirn: level_iterations needs {LEVELS} positive counts, got {self.level_iters}"
            )
        self.windows = [int(w) for w in params["ncc_window"]]
        self.freeze_iters = int(params["freeze_iters"])
        self.lam = float(params["lambda_smooth"])
        self.multiple = (
            2 ** (LEVELS - 1) * 2
        )  # pyramid halvings, then one stride-2 step per level net
        self.level = LEVELS  # levels in use (training sets it per iteration)

    @staticmethod
    def total_iterations(params: dict) -> int:
        return int(sum(params["level_iterations"]))

    def set_iteration(self, i: int) -> None:
        ends = [sum(self.level_iters[: k + 1]) for k in range(LEVELS)]
        self.level = next(k + 1 for k, end in enumerate(ends) if i < end)
        start = ends[self.level - 2] if self.level > 1 else 0
        frozen = self.level > 1 and i - start < self.freeze_iters
        for k, net in enumerate(self.nets):
            for prm in net.parameters():
                prm.requires_grad_(k == self.level - 1 or (k < self.level - 1 and not frozen))

    def pyramid_field(self, fixed, moving, level: int):
        """Field at ``level`` (1 = quarter resolution) and the images at that resolution."""
        fixed_pyr, moving_pyr = pyramid(fixed), pyramid(moving)
        disp, feat = None, None
        for k in range(level):
            f, m = fixed_pyr[k], moving_pyr[k]
            disp = (
                torch.zeros_like(f).expand(-1, 3, -1, -1, -1)
                if disp is None
                else upsample_field(disp)
            )
            warped = voxel_warp(m, disp)
            residual, feat = self.nets[k](torch.cat([warped, f, disp], 1), feat)
            disp = disp + residual
        return disp, f, m

    def field(self, fixed, moving):
        disp, _, _ = self.pyramid_field(fixed, moving, LEVELS)
        return disp

    def loss(self, fixed, moving, iteration):
        disp, f, m = self.pyramid_field(fixed, moving, self.level)
        ncc = local_ncc(f, voxel_warp(m, disp), self.windows[self.level - 1])
        reg = diffusion(disp)
        return -ncc + self.lam * reg, {
            "level": self.level,
            "ncc": float(ncc.detach()),
            "smooth": float(reg.detach()),
        }

    @staticmethod
    def own_warp(image: torch.Tensor, disp: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
        return voxel_warp(image, disp, mode=mode)
