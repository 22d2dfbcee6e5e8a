"""Evaluate one run's folder of fields against a prepared dataset: two tidy CSVs."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from corereg import not_run
from corereg.data.manifest import Manifest, field_name
from corereg.errors import InputError
from corereg.evaluation import evaluate_pair
from corereg.io import load_field, write_csv
from corereg.timing import CARRIED, SECONDS


def _tre(manifest: Manifest, fixed: str, moving: str, disp) -> dict:
    """Mean TRE (mm) of a pair whose two scans have keypoints (Learn2Reg's keypointsTr)."""
    from corereg.evaluation import read_keypoints, tre_mm

    paths = manifest.keypoints_path(fixed), manifest.keypoints_path(moving)
    if None in paths:
        return {}
    fixed_kp, moving_kp = (read_keypoints(x) for x in paths)
    if fixed_kp.shape != moving_kp.shape:
        raise InputError(
            paths[1], f"{len(moving_kp)} keypoints, but the fixed scan's file has {len(fixed_kp)}"
        )
    return {"tre": float(tre_mm(fixed_kp, moving_kp, disp, manifest.spacing).mean())}


def evaluate_run(
    manifest: Manifest, fields: Path, spec: dict, out_structures, out_pairs
) -> pd.DataFrame:
    """Score every test pair; ``spec`` gives dataset, method, variant, seed and labels."""
    labels = spec.get("labels") or sorted(manifest.labels)
    unknown = sorted(set(labels) - set(manifest.labels))
    if unknown:
        raise InputError(
            manifest.path, f"evaluated labels {unknown} are not labels of this dataset"
        )
    missing = [k for k in ("dataset", "method", "variant", "seed") if k not in spec]
    if missing:
        from corereg.errors import CoreregError

        raise CoreregError(f"--spec: the evaluation's settings lack {missing}")
    ident = {k: spec[k] for k in ("dataset", "method", "variant", "seed")}
    reason = not_run.reason_of_fields(fields)
    if reason is not None:  # the method's tool is absent: one row that says so
        pairs = pd.DataFrame([{**ident, "not_run": reason}])
        write_csv(out_structures, pd.DataFrame(columns=[*ident, "fixed", "moving", "label"]))
        write_csv(out_pairs, pairs)
        print(f"[evaluate] not run: {reason}", flush=True)
        return pairs
    timing_path = fields / "timing.csv"
    if not timing_path.is_file():
        raise InputError(timing_path, "file does not exist (registration output incomplete)")
    timing = pd.read_csv(timing_path, dtype={"fixed": str, "moving": str})
    lacking = [c for c in ("fixed", "moving", SECONDS) if c not in timing.columns]
    if lacking:
        raise InputError(timing_path, f"lacks the columns {lacking} (not a register step's file)")
    twice = timing[timing.duplicated(["fixed", "moving"])]
    if len(twice):
        first = twice.iloc[0]
        raise InputError(
            timing_path, f"lists the pair {first['fixed']} <- {first['moving']} more than once"
        )
    timing = timing.set_index(["fixed", "moving"])
    labels_of = functools.lru_cache(maxsize=8)(manifest.load_labels)  # pairs share cases
    srows, prows = [], []
    for p in manifest.pairs("test"):
        fixed_lab = labels_of(p["fixed"])
        moving_lab = labels_of(p["moving"])
        disp = load_field(fields / field_name(p["fixed"], p["moving"]), manifest.shape)
        rows, summary = evaluate_pair(fixed_lab, moving_lab, disp, labels, manifest.spacing)
        summary.update(_tre(manifest, p["fixed"], p["moving"], disp))
        key = {**ident, "fixed": p["fixed"], "moving": p["moving"]}
        srows += [{**key, **r, "structure": manifest.labels[r["label"]]} for r in rows]
        if (p["fixed"], p["moving"]) not in timing.index:
            raise InputError(timing_path, f"no timing for pair {p['fixed']}_{p['moving']}")
        t = timing.loc[(p["fixed"], p["moving"])]
        extra = {k: t[k] for k in CARRIED if k in t.index}
        prows.append({**key, **summary, SECONDS: float(t[SECONDS]), "device": t["device"], **extra})
        print(f"[evaluate] {p['fixed']} <- {p['moving']}: Dice {summary['dice']:.3f}", flush=True)
    pairs = pd.DataFrame(prows)
    write_csv(out_structures, pd.DataFrame(srows))
    write_csv(out_pairs, pairs)
    return pairs
