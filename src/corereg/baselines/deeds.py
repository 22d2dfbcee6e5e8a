"""DEEDs (Heinrich et al., TMI 2013): MIND-SSC + minimum-spanning-tree discrete optimisation.

The PyPI package ``quantiphyse-deeds`` ships that very method as a compiled
extension (``deeds_wrapper.deedsReg(moving, fixed, alpha, randsamp, levels)``);
its package ``__init__`` imports the Quantiphyse GUI, so the extension module is
loaded directly from the package folder.

Field convention, read from the tool's own warp (``interp3`` with ``flag``):
for output voxel (i, j, k) of an array of shape (m, n, o) it samples the moving
image at (i + v, j + u, k + w), trilinearly, clamping at the border.  The
Learn2Reg field is therefore ``stack([v, u, w], -1)`` (axis 0, 1, 2), in voxels
of the fixed grid (tested against the tool's own warped image and labels).

``params.implementation: deedsbcv`` runs the newer deedsBCV instead, compiled from a
checkout the user names (``corereg.baselines.deedsbcv``); ``params.deedsbcv`` holds
its settings and the TMI-2013 keys (alpha, levels, randsamp) are then unused.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from corereg.errors import ToolMissing
from corereg.registration.methods import Method

INSTALL = (
    "pip install Cython==3.3.1 && pip install --no-deps --no-build-isolation --pre "
    "quantiphyse-deeds==0.8.dev9 (make does this)"
)


def extension():
    """The compiled ``deeds_wrapper`` module, without importing the Quantiphyse GUI."""
    spec = importlib.util.find_spec("quantiphyse_deeds")
    if spec is None or not spec.submodule_search_locations:
        raise ToolMissing("deeds", f"DEEDs is not installed: {INSTALL}")
    libs = sorted(Path(spec.submodule_search_locations[0]).glob("deeds_wrapper*.so"))
    if not libs:
        raise ToolMissing(
            "deeds", f"quantiphyse-deeds has no compiled deeds_wrapper extension: {INSTALL}"
        )
    mod_spec = importlib.util.spec_from_file_location("deeds_wrapper", libs[0])
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def to_l2r(ux: np.ndarray, vx: np.ndarray, wx: np.ndarray) -> np.ndarray:
    return np.stack([vx, ux, wx], axis=-1).astype(np.float32)


def from_l2r(disp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return disp[..., 1], disp[..., 0], disp[..., 2]


IMPLEMENTATIONS = ("tmi2013", "deedsbcv")


class Deeds(Method):
    uses_cuda = False
    kind = "deeds"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resolve_params()
        self.implementation = self.params["implementation"]
        self.last_warped: np.ndarray | None = None
        if self.implementation == "deedsbcv":
            from corereg.baselines import deedsbcv

            self.runner = deedsbcv.Runner(self.params["deedsbcv"])
        else:
            self.ext = extension()

    def register(self, fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
        if self.implementation == "deedsbcv":
            import torch

            return self.runner.register(fixed, moving, self.affine, threads=torch.get_num_threads())
        p = self.params
        warped, (ux, vx, wx), _log = self.ext.deedsReg(
            np.asarray(moving, dtype=np.float32),
            np.asarray(fixed, dtype=np.float32),
            alpha=float(p["alpha"]),
            randsamp=int(p["randsamp"]),
            levels=int(p["levels"]),
        )
        self.last_warped = warped
        return to_l2r(ux, vx, wx)
