"""The trained CoRe / Bigalke engine as a registration method, with the test-time
protocol of the paper's numbers (docs/method.md, 'Test time'): H with ICE, two warps,
Adam instance optimisation, and the reg_fac search to an SDlogJ band."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from corereg.device import synchronize, warm_up
from corereg.evaluation import sdlogj_code_normalized
from corereg.params import ENGINE_KEYS, DatasetSettings, EngineParams
from corereg.registration import network
from corereg.registration.fields import to_voxels
from corereg.registration.methods import Method
from corereg.registration.pipeline import adam_field, check_shape, network_field, prepare_input
from corereg.timing import engine_row


class Engine(Method):
    """``params``: engine constants (config ``engine`` + method params; keys left out are
    the checkpoint's training settings); ``dataset``: the dataset's test-time settings
    (``clamp_eval``, ``sdlogj_band``).  Test time reads ``test_adam`` and the
    ``reg_fac_*`` search keys."""

    needs_checkpoint = True
    kind = "engine"

    def __init__(self, params, device, checkpoint=None, seed=0, dataset=None):
        super().__init__(params, device, checkpoint, seed)
        self.net, self.ckpt = network.load_checkpoint(checkpoint, device)
        given = dict(self.params)
        self.dataset = dataset if dataset is not None else DatasetSettings()
        # The checkpoint's training settings fill the keys left out; given keys override them.
        trained = self.ckpt.get("params", {})  # stage checkpoints carry none
        self.p = EngineParams.from_mapping(
            {**{k: v for k, v in trained.items() if k in ENGINE_KEYS}, **given}, "engine params"
        )
        self.params = self.p.to_dict()
        self.chosen_reg_fac = self.p.reg_fac_start

    # -- the two halves of the protocol --------------------------------------------
    def _inputs(self, fixed, moving):
        check_shape(fixed.shape, "engine input")
        clamp = self.dataset.clamp_eval
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None, None].to(self.device)  # noqa: E731
        self._hu = (to(fixed), to(moving))  # kept for adam_feat: mind
        return prepare_input(self._hu[0], self.p, clamp), prepare_input(self._hu[1], self.p, clamp)

    def _net_field(self, fx, mv):
        return network_field(self.net, fx, mv, self.p, self.p.ice, self.dataset.clamp_eval)

    def _adam(self, fx, mv, field, reg_fac, index, timings=None):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + index)
        return adam_field(self.net, fx, mv, field, reg_fac, self.p, gen, self._hu, timings=timings)

    def register(self, fixed, moving):
        fx, mv = self._inputs(fixed, moving)
        field = self._net_field(fx, mv)
        if self.p.test_adam:
            field = self._adam(fx, mv, field, self.chosen_reg_fac, 0)
        return to_voxels(field).cpu().numpy()

    # -- the set, with the reg_fac search ------------------------------------------------
    def register_set(self, pairs, load, save, warmup: bool = True) -> list[dict]:
        """H (+ double warp) once per pair, then Adam in rounds of the reg_fac search.

        Each pair's images are decoded once: the HU volumes and the network field are
        kept in a temporary folder for the rounds, and only the last round's fields are
        written as Learn2Reg files."""
        p = self.p
        with tempfile.TemporaryDirectory(prefix="corereg-engine-") as tmp:
            net_secs, cache = [], []
            for k, pair in enumerate(pairs):
                fixed, moving, affine = load(pair)
                fx, mv = self._inputs(fixed, moving)
                if k == 0 and warm_up(self.device, warmup):
                    self._net_field(fx, mv)
                synchronize(self.device)
                t0 = time.perf_counter()
                field = self._net_field(fx, mv)
                synchronize(self.device)
                net_secs.append(time.perf_counter() - t0)
                if not p.test_adam:
                    save(pair, to_voxels(field).cpu().numpy(), affine)
                    continue
                path = Path(tmp) / f"{k}.pt"
                torch.save({"field": field.cpu(), "hu": tuple(h.cpu() for h in self._hu)}, path)
                cache.append((path, affine))
            if not p.test_adam:
                return [
                    engine_row(
                        q,
                        net=s,
                        adam=0.0,
                        steps=0.0,
                        iters=0,
                        rounds=0,
                        reg_fac=float("nan"),
                        status="off",
                    )
                    for q, s in zip(pairs, net_secs, strict=True)
                ]
            rows = self._search(pairs, cache, net_secs)
            for pair, (path, affine) in zip(pairs, cache, strict=True):
                save(pair, to_voxels(torch.load(path.with_suffix(".adam.pt"))).numpy(), affine)
            return rows

    def _round(self, cache, reg_fac):
        """Adam for every cached pair at ``reg_fac``; outputs go beside the cache."""
        sd, secs, steps = [], [], []
        for k, (path, _) in enumerate(cache):
            entry = torch.load(path)
            fx, mv = self._inputs(*(h[0, 0].numpy() for h in entry["hu"]))
            field = entry["field"].to(self.device)
            synchronize(self.device)
            t0 = time.perf_counter()
            timings = {}
            out = self._adam(fx, mv, field, reg_fac, k, timings)
            synchronize(self.device)
            secs.append(time.perf_counter() - t0)
            steps.append(timings.get("steps_s", 0.0))
            sd.append(sdlogj_code_normalized(out[0].cpu().numpy()))
            torch.save(out.cpu(), path.with_suffix(".adam.pt"))
        self._step_secs = steps
        return float(np.mean(sd)), secs

    def _search(self, pairs, cache, net_secs):
        """The reg_fac search of the paper's test protocol (:func:`search_reg_fac`) over the
        cached pairs; the last round's Adam fields are the ones written."""
        p, band = self.p, self.dataset.sdlogj_band
        secs = {}

        def round_at(reg_fac: float) -> float:
            sd, secs["adam"] = self._round(cache, reg_fac)
            print(f"[register] reg_fac {reg_fac:.4g}: mean SDlogJ(code) {sd:.4f}", flush=True)
            return sd

        res = search_reg_fac(
            round_at,
            start=p.reg_fac_start,
            step=p.reg_fac_step,
            band=band if p.reg_fac_search else None,
            max_rounds=p.reg_fac_max_rounds,
        )
        if res.status == "out_of_band":
            print(
                f"[register] reg_fac search did not reach the SDlogJ band {band} in "
                f"{len(res.history)} rounds; keeping reg_fac {res.reg_fac:.4g} "
                f"(SDlogJ {res.sdlogj:.4f})",
                flush=True,
            )
        self.chosen_reg_fac = res.reg_fac
        # the parts of the run time (what `corereg costs` models): network, one Adam run at
        # adam_iters steps (its loop alone beside it), and how many such runs the search made
        return [
            engine_row(
                q,
                net=n,
                adam=a,
                steps=st,
                iters=p.adam_iters,
                rounds=len(res.history),
                reg_fac=res.reg_fac,
                status=res.status,
                sdlogj=res.sdlogj,
            )
            for q, n, a, st in zip(pairs, net_secs, secs["adam"], self._step_secs, strict=True)
        ]


@dataclass
class SearchResult:
    reg_fac: float
    sdlogj: float
    history: list[tuple[float, float]]  # (reg_fac, mean SDlogJ) of every round, in order
    status: str  # in_band | out_of_band | off (no band or the search switched off)


def search_reg_fac(round_at, start: float, step: float, band, max_rounds: int) -> SearchResult:
    """The test-time search of the authors' test.py: from ``start``, raise reg_fac by ``step``
    while the mean SDlogJ (code formula) of a round is above ``band``, lower it while below,
    halving the step at every reversal; stop in the band.  The released code has no round
    limit: after ``max_rounds`` rounds the last round is kept and the status says so.
    ``band=None`` runs one round at ``start``."""
    reg_fac, last, history = float(start), None, []
    for r in range(max(int(max_rounds), 1)):
        sd = float(round_at(reg_fac))
        history.append((reg_fac, sd))
        if band is None:
            return SearchResult(reg_fac, sd, history, "off")
        if band[0] <= sd <= band[1]:
            return SearchResult(reg_fac, sd, history, "in_band")
        if r == max_rounds - 1:
            break
        if sd > band[1]:
            if last == "down":
                step /= 2
            reg_fac, last = reg_fac + step, "up"
        else:
            if last == "up":
                step /= 2
            reg_fac, last = max(reg_fac - step, 0.0), "down"
    return SearchResult(reg_fac, sd, history, "out_of_band")
