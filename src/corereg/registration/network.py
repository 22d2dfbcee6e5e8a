"""Feature extractor G and projection head P (docs/method.md), one ``nn.Sequential``.

Modules 0..11 are G (four conv-BN-ReLU blocks, strides 2, 1, 2, 1), 12..15 are
P (conv-BN-ReLU stride 2, then a 1x1x1 conv to 16 channels).  Named views:

* ``forward``: P(G(x)), 16 channels at 1/8 resolution (input of H);
* ``g2``: modules 0..5, 64 channels at 1/2 (instance optimisation);
* ``conv4``: modules 0..9, the raw 4th convolution before its BN, 128 channels
  at 1/4 (the contrastive loss); ``after_conv4`` runs the rest.
"""

from __future__ import annotations

import torch
from torch import nn

from corereg.errors import InputError
from corereg.params import EngineParams


class FeatureNet(nn.Sequential):
    def __init__(self, channels=(32, 64, 128, 128), strides=(2, 1, 2, 1), proj=(128, 16)):
        layers: list[nn.Module] = []
        cin = 1
        for cout, s in zip(channels, strides, strict=True):
            layers += [
                nn.Conv3d(cin, cout, 3, stride=s, padding=1),
                nn.BatchNorm3d(cout),
                nn.ReLU(),
            ]
            cin = cout
        layers += [
            nn.Conv3d(cin, proj[0], 3, stride=2, padding=1),
            nn.BatchNorm3d(proj[0]),
            nn.ReLU(),
            nn.Conv3d(proj[0], proj[1], 1),
        ]
        super().__init__(*layers)
        self.arch = {"channels": list(channels), "strides": list(strides), "proj": list(proj)}

    def prefix(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """Output of the first ``n`` modules."""
        for module in list(self._modules.values())[:n]:
            x = module(x)
        return x

    def g2(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefix(x, 6)

    def conv4(self, x: torch.Tensor) -> torch.Tensor:
        return self.prefix(x, 10)

    def after_conv4(self, c4: torch.Tensor) -> torch.Tensor:
        """Modules 10.. applied to a ``conv4`` output: ``after_conv4(conv4(x)) == forward(x)``."""
        for module in list(self._modules.values())[10:]:
            c4 = module(c4)
        return c4


def build(params: EngineParams) -> FeatureNet:
    return FeatureNet(params.feat_channels, params.feat_strides, params.proj_channels)


def load_checkpoint(path, device) -> tuple[FeatureNet, dict]:
    """Load ``final.pt`` (or a stage checkpoint): the network and its metadata."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError(
            path, f"not a readable checkpoint ({exc.__class__.__name__}: {exc})"
        ) from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "arch" not in ckpt:
        raise InputError(path, "not a corereg engine checkpoint (keys 'model' and 'arch' missing)")
    arch = ckpt["arch"]
    net = FeatureNet(arch["channels"], arch["strides"], arch["proj"])
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise InputError(
            path, f"checkpoint does not match the engine architecture {arch}: {first[0].strip()}"
        ) from exc
    return net.to(device).eval(), ckpt
