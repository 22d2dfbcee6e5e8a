"""Learned pairwise registration baselines (VoxelMorph, LapIRN): training and inference.

Both are unsupervised: a network maps (moving, fixed) to a displacement field in
voxels of the fixed grid and is trained on the manifest's training pairs with a
local-NCC similarity and a diffusion regulariser.  This module holds what the two
share:

* the intensity normalisation (HU clipped to ``window`` and scaled to [0, 1]) and
  padding to the network's size multiple (the field is cropped back);
* ``voxel_warp``: the pull warp ``I(x + u(x))`` with ``u`` in voxels, channels in
  array-axis order, i.e. exactly the Learn2Reg field convention;
* ``Trainer``: seeded pair sampling, Adam, validation Dice every ``val_every``
  iterations, a full checkpoint (model, optimiser, generator, log) every
  ``ckpt_every`` iterations from which a killed job resumes, ``final.pt`` and
  ``train_log.csv`` at the end;
* ``LearnedMethod``: the registration adapter that loads ``final.pt``.

A model class (``corereg.baselines.voxelmorph``/``lapirn``) provides
``__init__(params)``, ``multiple`` (the padding multiple), ``loss(fixed, moving,
iteration) -> (loss, parts)``, ``field(fixed, moving) -> (B, 3, H, W, D)`` voxels and
optionally ``set_iteration(i)`` (LapIRN's progressive levels).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from corereg.config import check_method_params, method_params
from corereg.data.manifest import Manifest, data_fingerprint, train_val_pairs
from corereg.data.scan_cache import ScanCache
from corereg.device import seed_everything
from corereg.errors import CoreregError, InputError, ToolMissing
from corereg.measure import PhaseClock
from corereg.params import DatasetSettings
from corereg.registration.fields import warp
from corereg.registration.methods import Method
from corereg.training.batches import DataPlacement, Scans, choose_placement
from corereg.training.checkpoint import Checkpoint, ResumableTraining
from corereg.voxels import dice_mean


def model_class(kind: str):
    """The network class of a learned baseline kind (its method class names it)."""
    models = {c.kind: c.model for c in LearnedMethod.__subclasses__()}
    if kind not in models:
        raise CoreregError(f"no learned baseline of kind '{kind}'; known: {sorted(models)}")
    module, name = models[kind].split(":")
    return getattr(importlib.import_module(module), name)


def resolve_params(kind: str, params: dict) -> dict:
    """The model's and the trainer's parameters: ``params`` checked against the kind's schema,
    the schema's defaults for the rest."""
    model_class(kind)
    return method_params(kind, params, f"{kind} params")


# ----------------------------------------------------------------------------- tensors
def normalize(hu: torch.Tensor, window) -> torch.Tensor:
    lo, hi = float(window[0]), float(window[1])
    return (hu.clamp(lo, hi) - lo) / (hi - lo)


def pad_to(x: torch.Tensor, multiple: int, value: float = 0.0) -> torch.Tensor:
    """Pad the last three axes at their far end up to a multiple of ``multiple``."""
    pads = []
    for n in reversed(x.shape[-3:]):
        pads += [0, (-n) % multiple]
    return F.pad(x, pads, value=value) if any(pads) else x


def voxel_warp(image: torch.Tensor, disp: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Pull ``image`` (B, C, H, W, D) through a voxel field (B, 3, H, W, D), channel k along
    axis k; zeros outside.  The engine's warp after conversion to its normalised form."""
    scale = torch.tensor([2.0 / n for n in disp.shape[2:]], device=disp.device, dtype=disp.dtype)
    return warp(image, (disp * scale.view(1, 3, 1, 1, 1)).flip(1), mode=mode)


def diffusion(disp: torch.Tensor) -> torch.Tensor:
    """Mean squared forward difference of the field along the three axes (voxel units)."""
    d0 = disp[:, :, 1:] - disp[:, :, :-1]
    d1 = disp[:, :, :, 1:] - disp[:, :, :, :-1]
    d2 = disp[..., 1:] - disp[..., :-1]
    return (d0.pow(2).mean() + d1.pow(2).mean() + d2.pow(2).mean()) / 3.0


def local_ncc(a: torch.Tensor, b: torch.Tensor, window: int = 9, eps: float = 1e-5) -> torch.Tensor:
    """Mean squared local normalised cross-correlation over cubic windows (1 = identical)."""
    n = float(window**3)

    def pool(t):
        return F.avg_pool3d(t, window, stride=1, padding=window // 2, count_include_pad=False) * n

    sa, sb = pool(a), pool(b)
    saa, sbb, sab = pool(a * a), pool(b * b), pool(a * b)
    cross = sab - sa * sb / n
    var_a = (saa - sa * sa / n).clamp_min(0)
    var_b = (sbb - sb * sb / n).clamp_min(0)
    return (cross * cross / (var_a * var_b + eps)).mean()


# ----------------------------------------------------------------------------- data
class PairData:
    """The train and validation pairs of a manifest; each scan is normalised and padded
    when a batch needs it, from the training's :class:`~corereg.training.batches.Scans`
    (resident on the device or read from the scan cache)."""

    def __init__(
        self,
        manifest: Manifest,
        window,
        multiple: int,
        device,
        n_val: int,
        eval_labels,
        placement: DataPlacement | None = None,
    ):
        placement = placement or DataPlacement()
        self.train, self.val = train_val_pairs(manifest, n_val)
        self.shape = tuple(manifest.shape)
        self.window, self.multiple = window, multiple
        ids = sorted({i for pr in self.train + self.val for i in pr})
        val_ids = sorted({i for pr in self.val for i in pr})
        cache = ScanCache(manifest, placement.cache_dir or None)
        nbytes = cache.nbytes(len(ids), len(val_ids))
        where = choose_placement(placement, torch.device(device), nbytes)
        self.scans = Scans(cache, ids, val_ids, device, where)
        self.eval_labels = list(eval_labels or sorted(manifest.labels))
        self.fingerprint = data_fingerprint(manifest, self.train + self.val)

    def image(self, case_id: str) -> torch.Tensor:
        """The network input of a case: HU normalised by the window, padded."""
        return pad_to(normalize(self.scans.image(case_id), self.window), self.multiple)

    def labels(self, case_id: str) -> torch.Tensor:
        return pad_to(self.scans.labels(case_id).float(), self.multiple)


# ----------------------------------------------------------------------------- training
class Trainer(ResumableTraining):
    def __init__(
        self,
        kind: str,
        manifest: Manifest,
        params: dict,
        seed: int,
        device,
        out_dir,
        eval_labels=None,
        log=print,
        placement: DataPlacement | None = None,
    ):
        self.kind, self.p, self.seed, self.device = (
            kind,
            resolve_params(kind, params),
            int(seed),
            device,
        )
        self.out, self.log = Path(out_dir), log
        self.clock = PhaseClock(device)
        self.cls = model_class(kind)
        seed_everything(self.seed)
        self.net = self.cls(self.p).to(device)
        self.data = PairData(
            manifest,
            self.p["window"],
            self.net.multiple,
            device,
            int(self.p["val_pairs"]),
            eval_labels,
            placement,
        )
        self.data.scans.clock = self.clock
        identity = {"params": self.p, "seed": self.seed, "kind": kind}
        self.checkpoint = Checkpoint(self.out, {**identity, "data": self.data.fingerprint})
        self.opt = torch.optim.Adam(self.net.parameters(), lr=float(self.p["lr"]))
        self.gen = torch.Generator().manual_seed(self.seed)
        self.total = self.net.total_iterations(self.p)
        self.rows: list[dict] = []
        self.start = 0

    def _state(self, iteration: int) -> dict:
        return {
            "iteration": iteration,
            "model": self.net.state_dict(),
            "optimizer": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "rows": self.rows,
            "torch_rng": torch.get_rng_state(),
        }

    def restore(self, st: dict) -> None:
        self.net.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])

    def _batch(self):
        idx = torch.randint(
            len(self.data.train), (int(self.p["batch_size"]),), generator=self.gen, device="cpu"
        )
        pairs = [self.data.train[int(k)] for k in idx]
        fixed = torch.cat([self.data.image(f) for f, _ in pairs])
        moving = torch.cat([self.data.image(m) for _, m in pairs])
        return fixed, moving

    def validate(self) -> float:
        with self.clock("validation", units=len(self.data.val)):
            return self._validate()

    @torch.no_grad()
    def _validate(self) -> float:
        self.net.eval()
        vals = []
        for f, m in self.data.val:
            disp = self.net.field(self.data.image(f), self.data.image(m))
            warped = voxel_warp(self.data.labels(m), disp, mode="nearest")
            vals.append(dice_mean(self.data.labels(f), warped, self.data.eval_labels))
        self.net.train()
        return float(np.mean(vals))

    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        self.resume()
        val_every, ckpt_every = int(self.p["val_every"]), int(self.p["ckpt_every"])
        self.net.train()
        t0 = time.perf_counter()
        if self.start == 0:
            self.rows.append({"iteration": 0, "loss": float("nan"), "val_dice": self.validate()})
        for i in range(self.start, self.total):
            if hasattr(self.net, "set_iteration"):
                self.net.set_iteration(i)
            with self.clock("train_iteration"):
                fixed, moving = self._batch()
                loss, parts = self.net.loss(fixed, moving, i)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
            last = i == self.total - 1
            if i % val_every == val_every - 1 or last:
                row = {
                    "iteration": i + 1,
                    "loss": float(loss.detach()),
                    **{k: float(v) for k, v in parts.items()},
                    "val_dice": self.validate(),
                }
                self.rows.append(row)
                self.log(
                    f"[train] {self.kind} it {i + 1}/{self.total} loss {row['loss']:.4f} "
                    f"val Dice {row['val_dice']:.3f} {time.perf_counter() - t0:.0f} s"
                )
            if (i + 1) % ckpt_every == 0 and not last:
                self.checkpoint.save(self._state(i + 1))
        return self._finish()

    def _finish(self) -> Path:
        model = {
            "kind": self.kind,
            "model": self.net.state_dict(),
            "params": self.p,
            "seed": self.seed,
            "iterations": self.total,
        }
        self.data.scans.close()
        return self.finish(
            model,
            kind=self.kind,
            shape=list(self.data.shape),
            data_placement=self.data.scans.placement,
        )


def train(
    manifest: Manifest,
    spec: dict,
    device,
    out_dir,
    log=print,
    placement: DataPlacement | None = None,
) -> Path:
    ds = DatasetSettings.from_mapping(spec["dataset"])
    return Trainer(
        spec["kind"],
        manifest,
        spec["params"],
        int(spec["seed"]),
        device,
        out_dir,
        ds.eval_labels,
        log,
        placement,
    ).run()


# ----------------------------------------------------------------------------- inference
class LearnedMethod(Method):
    """A trained VoxelMorph / LapIRN network as a registration method (one forward pass)."""

    needs_checkpoint = True
    kind = ""
    model = ""  # "module:Class" of the network

    def __init__(self, params, device, checkpoint=None, seed=0):
        super().__init__(params, device, checkpoint, seed)
        check_method_params(self.kind, self.params, f"{self.kind} params")
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if ckpt.get("not_run"):  # training could not run (its tool is absent): report that
            raise ToolMissing(self.kind, ckpt["not_run"])
        if ckpt.get("kind") != self.kind:
            raise InputError(checkpoint, f"is a '{ckpt.get('kind')}' model, not '{self.kind}'")
        # The training parameters are the defaults; register-time params may only repeat them.
        self.params = resolve_params(self.kind, {**ckpt["params"], **self.params})
        self.net = model_class(self.kind)(self.params).to(device)
        self.net.load_state_dict(ckpt["model"])
        self.net.eval()

    @torch.no_grad()
    def field_tensor(self, fixed: np.ndarray, moving: np.ndarray) -> torch.Tensor:
        """(1, 3, H', W', D') voxel field on the padded grid."""

        def to(a):
            x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
            return pad_to(normalize(x, self.params["window"]), self.net.multiple).to(self.device)

        return self.net.field(to(fixed), to(moving))

    def register(self, fixed, moving):
        h, w, d = fixed.shape
        disp = self.field_tensor(fixed, moving)[0, :, :h, :w, :d]
        return disp.permute(1, 2, 3, 0).float().cpu().numpy()


class VoxelMorph(LearnedMethod):
    kind = "voxelmorph"
    model = "corereg.baselines.voxelmorph:VoxelMorphNet"


class LapIRNMethod(LearnedMethod):
    kind = "lapirn"
    model = "corereg.baselines.lapirn:LapIRN"
