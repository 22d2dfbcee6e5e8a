"""The registration methods available in this version of the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from corereg.config import method_params
from corereg.device import warm_up
from corereg.timing import pair_row


class Method:
    """One registration method: ``register(fixed, moving) -> (H, W, D, 3)`` voxel field."""

    needs_checkpoint: ClassVar[bool] = False
    kind: ClassVar[str] = "method"  # its method kind (corereg.adapters.METHOD_KINDS)
    # External CPU tools (NiftyReg, DEEDs) get no untimed CUDA warm-up pair.
    uses_cuda: ClassVar[bool] = True

    def __init__(
        self, params: dict, device: torch.device, checkpoint: Path | None = None, seed: int = 0
    ):
        self.params = dict(params or {})
        self.device = device
        self.checkpoint = checkpoint
        self.seed = seed
        # The images' voxel-to-world affine of the pair being registered (register_set sets
        # it): tools that read NIfTI files write their inputs with it.
        self.affine = np.eye(4)

    def register(self, fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def resolve_params(self) -> None:
        """Check ``params`` against the method kind's schema (unknown keys, types, ranges:
        one clear error) and fill in the kind's defaults; adapters call it first."""
        self.params = method_params(self.kind, self.params, f"{self.kind} params")

    def register_set(self, pairs, load, save, warmup: bool = True) -> list[dict]:
        """Register ``pairs`` (dicts with fixed, moving); ``load(pair)`` gives the two HU
        arrays and the affine, ``save(pair, disp, affine)`` writes a field.  Returns one
        row per pair with its seconds.  Methods that need the whole set override this."""
        from corereg.registration import timed_register

        rows = []
        for k, pair in enumerate(pairs):
            fixed, moving, affine = load(pair)
            self.affine = affine
            if k == 0 and self.uses_cuda and warm_up(self.device, warmup):
                timed_register(self, fixed, moving)  # CUDA context and kernels, not timed
            disp, secs = timed_register(self, fixed, moving)
            save(pair, disp, affine)
            rows.append(pair_row(pair, secs))
            print(f"[register] {pair['fixed']} <- {pair['moving']}: {secs:.2f} s", flush=True)
        return rows


class Initial(Method):
    """No registration: the zero field (the 'Initial' row of every table)."""

    kind = "initial"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resolve_params()

    def register(self, fixed, moving):
        return np.zeros((*fixed.shape, 3), dtype=np.float32)


class ConvexAdam(Method):
    """ConvexAdam with MIND-SSC features (Siebert et al.), from the PyPI package ``convexadam``.

    Parameters (config ``methods.convexadam.params``) are those of
    ``convex_adam_pt``: mind_r, mind_d, lambda_weight, grid_sp, disp_hw,
    selected_niter, selected_smooth, grid_sp_adam, ic.  Half precision on CUDA,
    single precision on the CPU (the package's own rule).
    """

    kind = "convexadam"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resolve_params()

    def register(self, fixed, moving):
        from convexAdam.convex_adam_MIND import convex_adam_pt

        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        grid = int(self.params.get("grid_sp", 6))
        if min(fixed.shape) // grid < 3:  # its 3-voxel pooling on the grid_sp-coarse grid
            from corereg.errors import CoreregError

            raise CoreregError(
                f"ConvexAdam: images of shape {tuple(fixed.shape)} are too thin for grid_sp "
                f"{grid} (every size needs at least 3 x grid_sp voxels); lower params.grid_sp"
            )
        disp = convex_adam_pt(
            torch.from_numpy(np.ascontiguousarray(fixed)),
            torch.from_numpy(np.ascontiguousarray(moving)),
            dtype=dtype,
            device=self.device,
            **self.params,
        )
        return np.asarray(disp, dtype=np.float32)
