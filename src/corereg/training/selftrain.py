"""Cyclical self-training with refined pseudo-labels (docs/method.md).

Stage 0: a random network produces pseudo-labels (H with ICE, double warp, Adam)
and difficulty weights; the network is then re-initialised.  Each of M stages
trains N iterations on affinely augmented pairs against the stored half-resolution
labels, then refines the labels with the current network.  A full checkpoint
(model, optimiser, scheduler, scaler, random generators, labels, weights, log) is
written after every stage; a restarted job resumes from the newest one and, on the
CPU with a fixed seed, ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from corereg.data.manifest import Manifest, data_fingerprint, train_val_pairs
from corereg.data.scan_cache import ScanCache
from corereg.device import amp_active, seed_everything
from corereg.measure import PhaseClock
from corereg.params import DatasetSettings, EngineParams
from corereg.registration import network
from corereg.registration.fields import warp
from corereg.registration.pipeline import autocast, check_shape, half, prepare_input, register_pair
from corereg.training.augment import augment_pair
from corereg.training.batches import DataPlacement, Scans, choose_placement
from corereg.training.checkpoint import Checkpoint, ResumableTraining
from corereg.training.contrastive import (
    check_params,
    cl_weight,
    contrastive_loss,
    contrastive_loss_listing1,
    contrastive_net,
)
from corereg.training.label_file import LabelFile, LabelWriter
from corereg.voxels import dice_mean


# ----------------------------------------------------------------------------- data
@dataclass
class TrainData:
    scans: Scans  # the training and validation scans (resident or read per batch)
    train_pairs: list[tuple[str, str]]
    val_pairs: list[tuple[str, str]]
    eval_labels: list[int]
    shape: tuple[int, int, int] = field(default=(0, 0, 0))
    fingerprint: str = ""  # the training data's (data.manifest.data_fingerprint)


def load_data(
    manifest: Manifest,
    eval_labels=None,
    n_val: int = 4,
    device: torch.device | str = "cpu",
    placement: DataPlacement | None = None,
) -> TrainData:
    """The training and validation pairs of ``manifest``; their scans are cached
    uncompressed and kept on ``device`` or read per batch (:mod:`corereg.training.batches`)."""
    placement = placement or DataPlacement()
    train, val = train_val_pairs(manifest, n_val)
    check_shape(manifest.shape, manifest.path)
    ids = sorted({i for pr in train + val for i in pr})
    val_ids = sorted({i for pr in val for i in pr})
    cache = ScanCache(manifest, placement.cache_dir or None)
    where = choose_placement(placement, torch.device(device), cache.nbytes(len(ids), len(val_ids)))
    return TrainData(
        Scans(cache, ids, val_ids, device, where),
        train,
        val,
        list(eval_labels or sorted(manifest.labels)),
        manifest.shape,
        data_fingerprint(manifest, train + val),
    )


# ----------------------------------------------------------------------------- pieces
def _squared_endpoint_error(
    a: torch.Tensor, b: torch.Tensor, full_shape, crop: int
) -> torch.Tensor:
    """‖(a − b) ⊙ (D/2, W/2, H/2)‖² per voxel of two normalised half-resolution fields, border cropped:
    the squared endpoint error in full-resolution voxels, as the code measures it."""
    h, w, d = full_shape
    scale = torch.tensor([d / 2.0, w / 2.0, h / 2.0], device=a.device).view(1, 3, 1, 1, 1)
    sl = (slice(None), slice(None), *([slice(crop, -crop)] * 3))
    return ((a[sl].float() - b[sl]) * scale).pow(2).sum(1)


def difficulty(noadam: torch.Tensor, adam: torch.Tensor, full_shape, crop: int = 8) -> torch.Tensor:
    """Mean size of the Adam correction per pair: 1.5 · ‖Δu ⊙ (D/2, W/2, H/2)‖ on the cropped half grid."""
    return (_squared_endpoint_error(noadam, adam, full_shape, crop).sqrt() * 1.5).flatten(1).mean(1)


def rank_weights(err: torch.Tensor) -> torch.Tensor:
    """Pair of rank r (ascending error) gets sigmoid(linspace(5, -5, N))[r]: small corrections are favoured."""
    n = err.numel()
    q = torch.zeros(n, device="cpu")
    q[torch.argsort(err)] = torch.sigmoid(torch.linspace(5, -5, n, device="cpu"))
    return q


def registration_loss(pred, target, full_shape, kind: str = "epe", crop: int = 8) -> torch.Tensor:
    """``epe``: mean 1.5·‖(pred − target) ⊙ (D/2, W/2, H/2)‖ (the code); ``mse``: its squared mean (paper Eq. 2)."""
    sq = _squared_endpoint_error(pred, target, full_shape, crop)
    if kind == "epe":
        return (sq.sqrt() * 1.5).mean()
    if kind == "mse":
        return (sq * 1.5**2).mean()
    raise ValueError(f"reg_loss must be 'epe' or 'mse', not '{kind}'")


# ----------------------------------------------------------------------------- trainer
class Trainer(ResumableTraining):
    def __init__(
        self,
        data: TrainData,
        params: EngineParams,
        seed: int,
        device: torch.device,
        out_dir: Path,
        clamp_eval=None,
        log=print,
        clamp_train=None,
    ):
        self.d, self.p, self.seed, self.device = data, params, seed, device
        self.out, self.clamp, self.log = Path(out_dir), clamp_eval, log
        self.checkpoint = Checkpoint(
            self.out, {"params": params.to_dict(), "seed": seed, "data": data.fingerprint}
        )
        self.clamp_train = clamp_train
        self.stages, self.ips = params.stages, params.iters_per_stage
        self._joint = params.joint_contrastive
        self._frozen = params.contrastive and params.contrastive_mode == "pretrain_frozen"
        if params.contrastive:
            check_params(params)
        self._listing1 = self._joint and params.cl_views == "listing1"
        self.last_cl = float("nan")
        self.total = self.stages * self.ips
        self.rows: list[dict] = []
        self.clock = PhaseClock(device)
        data.scans.clock = self.clock  # the time a step waits for its data is a phase
        self._next: torch.Tensor | None = None  # the next batch's pairs, drawn ahead
        # cl_feature_layer post_relu_proj: the contrastive projection; ema: the teacher's
        # parameters (the shadow) and the settings of its online labels (one warp)
        self.proj: nn.Module | None = None
        self.shadow: list[torch.Tensor] | None = None
        self._teacher_p = params.replace(num_warps=1) if params.ema else None

    # -- state ------------------------------------------------------------------
    def _fresh_optim(self):
        p = self.p
        self.opt = torch.optim.Adam(
            [q for q in self._trained_parameters() if q.requires_grad], lr=p.lr_max
        )
        if p.lr_schedule == "cosine_warm_restarts":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                self.opt, T_0=self.ips, T_mult=1, eta_min=p.lr_min
            )
        else:
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.opt, T_max=self.total, eta_min=p.lr_min
            )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self._amp)

    def _trained_parameters(self) -> list:
        return [*self.net.parameters(), *(self.proj.parameters() if self.proj else ())]

    @property
    def _cl_net(self):
        """Where the contrastive loss reads its features (the network, or its projection)."""
        return contrastive_net(self.net, self.proj)

    def _make_proj(self) -> None:
        if self.p.contrastive and self.p.cl_feature_layer == "post_relu_proj":
            c = self.p.feat_channels[3]
            self.proj = nn.Conv3d(c, c, 1).to(self.device)

    @property
    def _amp(self) -> bool:
        return amp_active(self.device, self.p.amp)

    def _init_fresh(self):
        seed_everything(self.seed)
        self.gens = {
            k: torch.Generator().manual_seed(self.seed * 1000 + i)
            for i, k in enumerate(("sample", "aug", "proj"))
        }
        if self.total > 0:  # stages: 0 needs no labels (the untrained reference network)
            first = network.build(self.p).to(self.device)  # random network for the stage-0 labels
            self._update_labels(first, stage=0)
        self.net = network.build(self.p).to(
            self.device
        )  # fresh random weights (docs/method.md, 'Cyclical self-training')
        self._make_proj()
        if self._frozen:
            self._pretrain_g()
            self._freeze_g()
        if self.p.ema:  # the teacher starts as the student
            self.shadow = [q.detach().clone() for q in self.net.parameters()]
        self._fresh_optim()
        self.start, self.stage = 0, 0

    # -- Table 2 "L_cl only": contrastive pretraining of G, then G frozen ---------------
    G_MODULES = 12  # modules 0..11 are G; 12..15 are P

    def _pretrain_g(self) -> None:
        p = self.p
        iters = p.cl_pretrain_iters
        opt = torch.optim.Adam(self._trained_parameters(), lr=p.lr_max)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(iters, 1), eta_min=p.lr_min
        )
        self.net.train()
        t0 = time.perf_counter()
        for i in range(iters):
            idx = torch.multinomial(
                torch.ones(len(self.d.train_pairs), device="cpu"),
                p.batch_size,
                replacement=True,
                generator=self.gens["sample"],
            )
            with self.clock("pretrain_iteration"):
                originals = [self._train_inputs(k) for k in idx.tolist()]
                opt.zero_grad(set_to_none=True)
                loss = contrastive_loss(self._cl_net, originals, p, self.gens["aug"])
                loss.backward()
                opt.step()
                sched.step()
            if i == 0 or i == iters - 1:
                self.log(
                    f"[train] contrastive pretraining {i + 1}/{iters}: L_c {float(loss.detach()):.3f} "
                    f"{time.perf_counter() - t0:.0f} s"
                )

    def _freeze_g(self) -> None:
        """G's parameters get no gradient and its BatchNorm statistics stay fixed."""
        for k, module in enumerate(self.net):
            if k < self.G_MODULES:
                module.eval()
                for prm in module.parameters():
                    prm.requires_grad_(False)

    def _state(self, iteration: int) -> dict:
        return {
            "iteration": iteration,
            "stage": self.stage,
            "model": self.net.state_dict(),
            "arch": self.net.arch,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "gens": {k: g.get_state() for k, g in self.gens.items()},
            "labels": self.labels.path.name,  # the stage's pseudo-label file (model folder)
            "weights": self.weights,
            "rows": self.rows,
            **({"proj": self.proj.state_dict()} if self.proj is not None else {}),
            **({"shadow": [q.cpu() for q in self.shadow]} if self.shadow is not None else {}),
        }

    def _save(self, iteration: int) -> None:
        stage_weights = {"model": self.net.state_dict(), "arch": self.net.arch, "stage": self.stage}
        side = {f"stage{self.stage}.pt": stage_weights}
        if self.shadow is not None:  # the teacher's weights of the stage (the code saves both)
            side[f"teacher_stage{self.stage}.pt"] = {
                **stage_weights,
                "model": self._teacher().state_dict(),
            }
        self.checkpoint.save(self._state(iteration), side)
        self._drop_label_files(keep=self.labels.path.name)

    def _drop_label_files(self, keep: str | None = None) -> None:
        """Pseudo-label files no checkpoint refers to any more."""
        for f in self.out.glob("labels_stage*.npy"):
            if f.name != keep:
                f.unlink(missing_ok=True)

    def restore(self, st: dict) -> None:
        self.net = network.FeatureNet(
            **{k: st["arch"][k] for k in ("channels", "strides", "proj")}
        ).to(self.device)
        self.net.load_state_dict(st["model"])
        self._make_proj()
        if self.proj is not None:
            self.proj.load_state_dict(st["proj"])
        if self._frozen:
            self._freeze_g()
        if self.p.ema:
            self.shadow = [q.to(self.device) for q in st["shadow"]]
        self._fresh_optim()
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        self.gens = {}
        for k, s in st["gens"].items():
            self.gens[k] = torch.Generator()
            self.gens[k].set_state(s)
        labels = st["labels"]
        if isinstance(labels, torch.Tensor):  # a checkpoint of an earlier version: inline
            writer = LabelWriter(self.out / f"labels_stage{st['stage']}.npy", len(labels))
            writer.append(labels)
            labels = writer.close().path.name
        self.labels, self.weights = LabelFile(self.out / labels), st["weights"]
        self._drop_label_files(keep=labels)  # e.g. a refresh the kill interrupted
        self.stage = st["stage"]

    def resume_note(self, st: dict) -> str:
        return f" (stage {st['stage']})"

    # -- the EMA teacher (engine.ema) ----------------------------------------------
    def _teacher(self):
        """The student with the shadow parameters (its BatchNorm buffers: the student's)."""
        teacher = copy.deepcopy(self.net)
        with torch.no_grad():
            for q, s in zip(teacher.parameters(), self.shadow, strict=True):
                q.copy_(s)
        return teacher

    def _teacher_label(self, teacher, k: int) -> torch.Tensor:
        """The online pseudo-label of training pair k: H with ICE and one warp on the
        unclamped inputs, then Adam on the teacher's features (half resolution, as stored)."""
        fx, mv = self._pair(*self.d.train_pairs[k])
        with torch.no_grad():
            res = register_pair(
                teacher,
                fx,
                mv,
                self._teacher_p,
                ice=True,
                clamp=None,
                use_adam=True,
                reg_fac=self.p.reg_fac_train,
                generator=self.gens["proj"],
            )
        return half(res.adam).detach()

    # -- pseudo-labels and validation -------------------------------------------
    def _pair(self, f, m):
        return self.d.scans.image(f), self.d.scans.image(m)

    def _train_inputs(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Network inputs (HU · scale, ``clamp_train``) of training pair k on the device."""
        fx, mv = self._pair(*self.d.train_pairs[k])
        return prepare_input(fx, self.p, self.clamp_train), prepare_input(
            mv, self.p, self.clamp_train
        )

    def _update_labels(self, net, stage: int) -> None:
        with self.clock("pseudo_labels", units=len(self.d.train_pairs)):
            self._refresh_labels(net, stage)

    def _refresh_labels(self, net, stage: int) -> None:
        """Each training pair's pseudo-label, written to the stage's label file as it is
        computed; the difficulty of each pair (the size of its Adam correction) is taken
        at once, so the labels before Adam are never all held."""
        t0 = time.perf_counter()
        use_q = self.p.difficulty_sampling and self.p.use_adam_for_labels
        crop = self.p.label_crop_border
        writer = LabelWriter(self.out / f"labels_stage{stage}.npy", len(self.d.train_pairs))
        errors = []
        try:
            for f, m in self.d.train_pairs:
                fx, mv = self._pair(f, m)
                res = register_pair(
                    net,
                    fx,
                    mv,
                    self.p,
                    ice=self.p.ice,
                    clamp=self.clamp,
                    use_adam=self.p.use_adam_for_labels,
                    reg_fac=self.p.reg_fac_train,
                    generator=self.gens["proj"],
                )
                adam = half(res.adam if res.adam is not None else res.net).cpu()
                if use_q:
                    errors.append(difficulty(half(res.net).cpu(), adam, self.d.shape, crop))
                writer.append(adam)
                del res, fx, mv
            self.labels = writer.close()
        except BaseException:
            writer.abort()
            raise
        n = len(self.labels)
        self.weights = rank_weights(torch.cat(errors)) if use_q else torch.ones(n, device="cpu")
        self.log(f"[train] stage {stage}: {n} pseudo-labels in {time.perf_counter() - t0:.1f} s")

    def validate(self, net) -> dict:
        with self.clock("validation", units=len(self.d.val_pairs)):
            return self._validate(net)

    def _validate(self, net) -> dict:
        dn, da = [], []
        for f, m in self.d.val_pairs:
            fx, mv = self._pair(f, m)
            res = register_pair(
                net,
                fx,
                mv,
                self.p,
                ice=True,
                clamp=self.clamp,
                use_adam=True,
                reg_fac=self.p.reg_fac_val,
                generator=self.gens["proj"],
            )
            fl, ml = self.d.scans.labels(f), self.d.scans.labels(m).float()
            # "net" Dice as the released code scores it: the moving labels warped by each
            # pass in turn (nearest neighbour), not by the composed field
            moved = ml
            for f_pass in res.passes:
                moved = warp(moved, f_pass, "nearest")
            dn.append(dice_mean(fl, moved.long(), self.d.eval_labels))
            da.append(dice_mean(fl, warp(ml, res.adam, "nearest").long(), self.d.eval_labels))
        return {"val_dice_net": float(np.nanmean(dn)), "val_dice": float(np.nanmean(da))}

    # -- one iteration ------------------------------------------------------------
    def _draw(self) -> torch.Tensor:
        """The training pairs of a batch, drawn by their difficulty weights."""
        return torch.multinomial(
            self.weights,
            self.p.batch_size,
            replacement=True,
            generator=self.gens["sample"],
        )

    def _label_read(self, k: int):
        return lambda: self.labels[k : k + 1]

    def draw_ahead(self, i: int) -> None:
        """After step ``i``: draw step i + 1's pairs now and start reading their scans and
        labels, unless a stage ends first (new labels and weights) or the training does.
        The draw comes from the same generator in the same order as at the step itself,
        so the batches are the same."""
        if i + 1 >= self.total or (i + 1) % self.ips == 0:
            return
        self._next = self._draw()
        pairs = [self.d.train_pairs[k] for k in self._next.tolist()]
        extras = []
        if self.shadow is None:
            extras = [(("label", k), self._label_read(k)) for k in self._next.tolist()]
        self.d.scans.prefetch([c for pr in pairs for c in pr], extras)

    def _batch(self):
        p = self.p
        idx, self._next = (self._next if self._next is not None else self._draw()), None
        fs, ms, ts, originals, affs = [], [], [], [], []
        teacher = self._teacher() if self.shadow is not None else None
        for k in idx.tolist():
            fx, mv = self._train_inputs(k)
            label = (
                self.d.scans.extra(("label", k), self._label_read(k))
                if teacher is None
                else self._teacher_label(teacher, k)
            )
            originals.append((fx, mv))
            with torch.no_grad():
                fa, ma, lab, aff = augment_pair(
                    fx,
                    mv,
                    label,
                    p.aug_strength_reg,
                    self.gens["aug"],
                    p.aug_label_composition,
                    p.pad_value_aug,
                    return_affines=True,
                )
            affs.append(aff)
            fs.append(fa)
            ms.append(ma)
            ts.append(lab)
        return torch.cat(fs), torch.cat(ms), torch.cat(ts), originals, affs

    def step(self, i: int) -> float:
        from corereg.registration import convex

        p = self.p
        bn_quirk = p.bn_quirk and i > 0 and i % self.ips == 0
        self.net.train(not bn_quirk)
        if self._frozen:
            self._freeze_g()
        fx, mv, target, originals, affs = self._batch()
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device, p.amp):
            if self._listing1:  # keep the conv4 outputs: they are view A of the contrastive loss
                c4f, c4m = self.net.conv4(fx), self.net.conv4(mv)
                ff, fm = self.net.after_conv4(c4f), self.net.after_conv4(c4m)
            else:
                ff, fm = self.net(fx), self.net(mv)
        half_shape = tuple(n // 2 for n in self.d.shape)
        pred = convex.optimise(ff, fm, half_shape, False, p)
        loss = registration_loss(pred, target, self.d.shape, p.reg_loss, p.label_crop_border)
        del ff, fm, pred
        self.last_cl = float("nan")
        # The separate form's contrastive passes share no activations with the registration
        # forward: backpropagating L_reg first frees its graph before they run (the gradients
        # add up to the same sum; only the order of the floating-point additions differs).
        if self._joint and not self._listing1 and p.cl_backward == "split":
            self.scaler.scale(loss).backward()
            loss = loss.detach()  # the backward below then carries only the contrastive term
        if self._joint:
            with autocast(self.device, p.amp):
                if self._listing1:
                    lc = contrastive_loss_listing1(
                        self.net, c4f, c4m, originals, affs, p, self.gens["aug"]
                    )
                else:
                    lc = contrastive_loss(self._cl_net, originals, p, self.gens["aug"])
            self.last_cl = float(lc.detach())
            loss = loss + cl_weight(i, self.total, p) * lc
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.shadow is not None:
            ema_update(self.shadow, self.net.parameters(), self.p.ema_decay)
        return float(loss.detach())

    # -- the loop -------------------------------------------------------------------
    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.resume():
            self._init_fresh()
        reset = self.p.optimizer_reset_every
        val_every = self.p.val_every
        t0 = time.perf_counter()
        if (
            self.total == 0
        ):  # stages: 0 is the untrained network (a reference row, no labels needed)
            self.rows.append(
                {
                    "iteration": 0,
                    "stage": 0,
                    "lr": 0.0,
                    "loss": float("nan"),
                    **self.validate(self.net),
                }
            )
        for i in range(self.start, self.total):
            if reset and i > 0 and i % reset == 0:
                self._fresh_optim()
            lr = self.opt.param_groups[0]["lr"]
            with self.clock("train_iteration"):
                loss = self.step(i)
            self.draw_ahead(i)
            if i == 0 or i % val_every == val_every - 1 or i == self.total - 1:
                row = {
                    "iteration": i + 1,
                    "stage": self.stage,
                    "lr": lr,
                    "loss": loss,
                    "loss_cl": self.last_cl,
                    "alpha": cl_weight(i, self.total, self.p) if self._joint else 0.0,
                    **self.validate(self.net),
                }
                self.rows.append(row)
                self.log(
                    f"[train] it {i + 1}/{self.total} loss {loss:.3f} val Dice {row['val_dice']:.3f} "
                    f"(net {row['val_dice_net']:.3f}) {time.perf_counter() - t0:.0f} s"
                )
            if i % self.ips == self.ips - 1:
                self.stage += 1
                if i < self.total - 1:  # refinement after the last stage would be unused
                    self._update_labels(self.net, self.stage)
                self._save(i + 1)
        return self._finish()

    def _finish(self) -> Path:
        self.d.scans.close()
        model = {
            "model": self.net.state_dict(),
            "arch": self.net.arch,
            "params": self.p.to_dict(),
            "seed": self.seed,
            "stages": self.stages,
            "iterations": self.total,
        }
        final = self.finish(
            model,
            kind="engine",
            shape=list(self.d.shape),
            form=self.p.cl_views if self._joint else "registration",
            train_pairs=len(self.d.train_pairs),
            data_placement=self.d.scans.placement,
        )
        self._drop_label_files()  # the resume state is spent
        return final


@torch.no_grad()
def ema_update(shadow, parameters, decay: float) -> None:
    """shadow <- decay * shadow + (1 - decay) * theta, after each optimiser step (the
    parameters only; BatchNorm buffers are not averaged)."""
    for s, q in zip(shadow, parameters, strict=True):
        s.mul_(decay).add_(q.detach(), alpha=1.0 - decay)


def train(
    manifest: Manifest,
    spec: dict,
    device: torch.device,
    out_dir,
    log=print,
    placement: DataPlacement | None = None,
) -> Path:
    ds = DatasetSettings.from_mapping(spec["dataset"])
    p = EngineParams.from_mapping(spec["params"], "train job params")
    data = load_data(manifest, ds.eval_labels, p.val_pairs, device, placement)
    return Trainer(
        data, p, int(spec["seed"]), device, Path(out_dir), ds.clamp_eval, log, ds.clamp_train
    ).run()


__all__ = [
    "Trainer",
    "difficulty",
    "ema_update",
    "rank_weights",
    "registration_loss",
    "train",
]
