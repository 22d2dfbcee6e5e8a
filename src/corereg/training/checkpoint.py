"""The resumable state of a training job, shared by every trainer.

A trainer saves its whole state (weights, optimiser, random generators, log rows,
...) at its checkpoints; a job that was stopped (a SLURM time limit, a killed
process) and starts again continues from the last one.  The file carries the
settings it was written with, and a checkpoint of other settings is refused rather
than continued.  Files are written atomically, side files first, so a checkpoint
on disk always has its side files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from corereg.errors import CoreregError
from corereg.io import atomic_path

CKPT = "checkpoint.pt"
# restart: a checkpoint written on other training data is removed and the training starts
# over (the workflow's jobs); otherwise (fail, the default) the job stops with one line.
OTHER_DATA_ENV = "COREREG_OTHER_DATA_CHECKPOINT"


class Checkpoint:
    """``folder``/checkpoint.pt of one training; ``identity``: the settings (parameters,
    seed, kind) and the training data (``data``: a fingerprint) a resumed state must have
    been written with."""

    def __init__(self, folder, identity: dict):
        self.path = Path(folder) / CKPT
        self.identity = dict(identity)

    def save(self, state: dict, side_files: dict[str, dict] | None = None) -> None:
        """Write ``state`` (with the identity); ``side_files``: other files of the same
        moment (name -> object), written before the checkpoint itself."""
        for name, obj in (side_files or {}).items():
            with atomic_path(self.path.parent / name, suffix=".pt") as tmp:
                torch.save(obj, tmp)
        with atomic_path(self.path, suffix=".pt") as tmp:
            torch.save({**state, **self.identity}, tmp)

    def load(self) -> dict | None:
        """The saved state, or None without a checkpoint; an error if it was written with
        other settings."""
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if "data" in self.identity and "data" not in state:  # written before data identities
            print(f"[train] {self.path}: checkpoint names no training data; resuming", flush=True)
            state["data"] = self.identity["data"]
        if "data" in self.identity and state["data"] != self.identity["data"]:
            if os.environ.get(OTHER_DATA_ENV, "fail") == "restart":
                print(
                    f"[train] {self.path}: written on other training data; starting over",
                    flush=True,
                )
                self.remove()
                return None
            raise CoreregError(
                f"{self.path}: checkpoint was written on other training data (the prepared "
                "dataset or its split changed since); delete it to start over"
            )
        if any(state.get(k) != v for k, v in self.identity.items()):
            raise CoreregError(
                f"{self.path}: checkpoint was written with other parameters or seed; "
                "delete it to restart"
            )
        return state

    def remove(self) -> None:
        """The training finished: its resume state is spent."""
        self.path.unlink(missing_ok=True)


class ResumableTraining:
    """What every trainer shares: resume from the checkpoint and finish the job.

    A trainer sets ``out`` (the model folder), ``checkpoint`` (:class:`Checkpoint`),
    ``clock`` (a :class:`corereg.measure.PhaseClock`), ``device``, ``rows`` (the log
    rows), ``start`` (the first iteration to run) and ``log``, and implements
    :meth:`restore` (its own state out of a saved one)."""

    def restore(self, state: dict) -> None:
        raise NotImplementedError

    def resume_note(self, state: dict) -> str:
        """What the resume line adds after the iteration (e.g. the stage)."""
        return ""

    def resume(self) -> bool:
        """Continue from the checkpoint if there is one (True), else leave the state fresh."""
        state = self.checkpoint.load()
        if state is None:
            return False
        self.restore(state)
        self.rows, self.start = state["rows"], state["iteration"]
        self.log(
            f"[train] resumed from {self.checkpoint.path} at iteration {self.start}"
            + self.resume_note(state)
        )
        return True

    def finish(self, model: dict, **costs) -> Path:
        """Write final.pt (``model``), train_log.csv and costs.json (the phases, peaks and
        ``costs``), then drop the spent resume state; returns final.pt."""
        import pandas as pd

        from corereg.io import write_csv, write_json
        from corereg.measure import costs_record

        final = self.out / "final.pt"
        with atomic_path(final, suffix=".pt") as tmp:
            torch.save(model, tmp)
        write_csv(self.out / "train_log.csv", pd.DataFrame(self.rows))
        write_json(
            self.out / "costs.json",
            costs_record(self.clock, self.device, **costs, resumed_at=self.start),
        )
        self.checkpoint.remove()  # the resume state (with its pseudo-labels) is spent
        return final
