"""VoxelMorph (Balakrishnan et al., TMI 2019) from the PyPI package ``voxelmorph`` 0.3.4.

The network is the package's own ``VxmPairwise`` (a U-Net on the concatenated
moving and fixed images, a flow layer, optionally scaling-and-squaring integration
of a stationary velocity field) and its ``SpatialTransformer``; the similarity is
the package's companion ``neurite.nn.modules.NCC`` and the regulariser the
diffusion (squared-gradient) penalty of the field.  Unsupervised training on the
manifest's training pairs (``corereg.baselines.learned.Trainer``).

Field convention, read from ``voxelmorph.nn.functional.spatial_transform``: the
field is (B, ndim, *spatial) in voxels, channel k along array axis k, and the warp
samples the moving image at x + u(x): the Learn2Reg convention once the channel
axis is moved last (tested against the package's own warp of labels).
"""

from __future__ import annotations

import torch

from corereg.baselines.learned import diffusion
from corereg.errors import ToolMissing

INSTALL = "pip install voxelmorph==0.3.4 neurite==0.3.4 (in requirements.lock; make installs it)"


def package():
    try:
        import neurite  # noqa: F401
        import voxelmorph
    except ImportError as exc:
        raise ToolMissing(
            "voxelmorph", f"the voxelmorph package is not importable ({exc}); {INSTALL}"
        ) from exc
    return voxelmorph


class VoxelMorphNet(torch.nn.Module):
    """``params``: methods.<name>.params of kind voxelmorph, defaults filled in (the
    configuration schema holds them and where they come from)."""

    def __init__(self, params: dict):
        super().__init__()
        vxm = package()
        import neurite as ne

        feats = [int(f) for f in params["nb_features"]]
        self.vxm = vxm.nn.models.VxmPairwise(
            ndim=3,
            source_channels=1,
            target_channels=1,
            nb_features=feats,
            integration_steps=int(params["integration_steps"]),
        )
        self.ncc = ne.nn.modules.NCC(window_size=int(params["ncc_window"]))
        self.lam = float(params["lambda_grad"])
        self.multiple = 2 ** len(feats)  # one pooling per encoder level

    @staticmethod
    def total_iterations(params: dict) -> int:
        return int(params["iterations"])

    def field(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        return self.vxm(moving, fixed, return_field_type="displacement")

    def loss(self, fixed, moving, iteration):
        disp, warped = self.vxm(moving, fixed, return_warped_source=True)
        sim = -self.ncc(fixed, warped).mean()
        reg = diffusion(disp)
        return sim + self.lam * reg, {"ncc": -float(sim.detach()), "smooth": float(reg.detach())}

    def own_warp(
        self, image: torch.Tensor, disp: torch.Tensor, mode: str = "nearest"
    ) -> torch.Tensor:
        """The package's own spatial transformer (the reference of the convention test)."""
        vxm = package()
        return vxm.nn.functional.spatial_transform(image, disp, method=mode)
