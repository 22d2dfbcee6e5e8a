"""Records of comparison methods that could not run here (their tool is absent).

A register job whose method raises ``ToolMissing`` writes, instead of fields, a
folder holding only ``not_run.json`` with the reason; a train job writes a
``final.pt`` that carries the reason (registration then reports it in turn).  The
evaluation turns the record into one ``pairs.csv`` row with a ``not_run`` column,
and the tables show the row as "not run*" with the reason as a footnote: a method
is never silently dropped.
"""

from __future__ import annotations

from pathlib import Path

from corereg.io import FIELDS, atomic_dir, atomic_path, read_json, write_csv, write_json

RECORD = "not_run.json"


def write_fields(out_dir, method: str, reason: str) -> None:
    with atomic_dir(out_dir, FIELDS) as tmp:
        write_json(tmp / RECORD, {"method": method, "reason": reason})
    print(f"[register] NOT RUN ({method}): {reason}", flush=True)


def write_model(out_dir, kind: str, reason: str) -> Path:
    import pandas as pd
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / "final.pt"
    with atomic_path(final, suffix=".pt") as tmp:
        torch.save({"kind": kind, "not_run": reason}, tmp)
    write_csv(out / "train_log.csv", pd.DataFrame(columns=["iteration", "loss", "val_dice"]))
    write_json(out / "costs.json", {"kind": kind, "not_run": reason})
    print(f"[train] NOT RUN ({kind}): {reason}", flush=True)
    return final


def write_record(out, reason: str, step: str = "weights") -> None:
    """A JSON record in place of a file a step could not make (weights that could not be
    fetched, a tool that could not be built)."""
    with atomic_path(out) as tmp:
        write_json(tmp, {"not_run": reason})
    print(f"[{step}] NOT RUN: {reason}", flush=True)


def reason_of_record(path) -> str | None:
    """The reason stored by ``write_record``, or None for a real (e.g. weights) file."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not head.lstrip().startswith(b"{"):
        return None
    return read_json(path).get("not_run")


def reason_of_fields(fields) -> str | None:
    path = Path(fields) / RECORD
    return read_json(path)["reason"] if path.is_file() else None
