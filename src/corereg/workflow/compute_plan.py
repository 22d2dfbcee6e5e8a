"""``corereg plan``: jobs, time, memory and disk of a configuration, before a run.

Job counts follow the workflow's own plan (the same :class:`corereg.workflow.jobs.Plan` the
Snakefile uses).  Time and memory come from the measured cost model
(:mod:`corereg.workflow.costs`, ``workflow/costs.yaml``): each job's units of work (iterations,
pseudo-label refreshes, test pairs, ...) times their measured cost on the job's device
kind, with the basis of every figure printed; rules without a measurement (downloads,
conversion, labelling) show their declared limits only.  Disk is computed from the
dataset shapes: images and labels (int16 + uint8), displacement fields (3 values per
voxel and registered pair, before gzip) and checkpoints.
"""

from __future__ import annotations

import math

import pandas as pd

from corereg.config import ENGINE_BLOCK
from corereg.workflow.jobs import Plan, Run

# The rule that makes each kind of asset a method kind declares (corereg.adapters).
ASSET_RULES = {"weights": "weights", "tool": "build"}
CHECKPOINT_MB = 4.0  # FeatureNet: about 0.9 M float32 parameters plus optimiser state


NAMED_TARGETS = ("table1", "table2", "table3", "fig3", "fig4a", "fig4b")  # target rules


def _targets(plan: Plan, targets):
    """(artifacts, claims?, the HTML report?, target rules) that ``targets`` ask for."""
    from corereg.errors import CoreregError
    from corereg.workflow.outputs import CLAIM_ARTIFACTS

    arts, claims, html, rules = [], False, False, 0
    for t in targets or ["all"]:
        if t == "all":
            arts += list(plan.cfg["artifacts"])
            claims = html = True
            rules += 1
        elif t == "claims":
            claims = True
        elif t in plan.cfg["artifacts"]:
            arts.append(t)
            rules += t in NAMED_TARGETS
        else:
            known = ", ".join(["all", "claims", *plan.cfg["artifacts"]])
            raise CoreregError(f"unknown target '{t}' (known: {known})")
    arts_for_runs = [*arts, *CLAIM_ARTIFACTS] if claims else arts
    return list(dict.fromkeys(arts)), claims, html, rules, list(dict.fromkeys(arts_for_runs))


def jobs_of_rules(plan: Plan, targets=None) -> dict[str, list[Run | None]]:
    """The jobs ``snakemake -n TARGET ...`` plans (every target: ``all``), by rule (a Run
    where the job has one).  Targets: ``all``, ``claims`` or artifact names."""
    arts, claims, html, n_targets, arts_for_runs = _targets(plan, targets)
    runs = list(dict.fromkeys(r for a in arts_for_runs for r in plan.runs(a)))
    datasets = sorted(
        {d for a in arts_for_runs for d in plan.cfg["artifacts"][a]["datasets"]}
        | {r.dataset for r in runs}
    )
    jobs: dict[str, list] = {"prepare": [Run(d, None, None, 0) for d in datasets]}
    for stage in dict.fromkeys(s for d in datasets for s in plan.stages(d)):  # data steps
        jobs[stage] = [None] * sum(stage in plan.stages(d) for d in datasets)
    for asset, rule in ASSET_RULES.items():  # released weights, compiled tools: made once
        made = {plan.assets(m).get(asset) for m in {r.method for r in runs}} - {None}
        if made:
            jobs[rule] = [None] * len(made)
    jobs["train"] = sorted({r for r in runs if plan.trainable(r.method)}, key=str)
    jobs["register"] = list(runs)
    jobs["evaluate"] = list(runs)
    kept = {f for a in arts for f in plan.artifact_inputs(a).get("fields", [])}
    if kept:  # the fields a qualitative figure shows, copied out of each run's folder
        jobs["keep_field"] = [None] * len(kept)
    # tables, figures, the claims and the reproduction report
    jobs["report"] = [None] * (len(arts) + claims + html)
    if n_targets:
        jobs["all"] = [None] * n_targets  # Snakemake's target rules
    return {rule: j for rule, j in jobs.items() if j}


def jobs_per_rule(plan: Plan, targets=None) -> dict[str, int]:
    return {rule: len(jobs) for rule, jobs in jobs_of_rules(plan, targets).items()}


def _fmt_h(seconds: float | None) -> str | float:
    return "–" if seconds is None else round(seconds / 3600, 2)


def estimate(plan: Plan, targets=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    for rule, jobs in jobs_of_rules(plan, targets).items():
        if rule not in RESOURCES_OF:  # the target rule: no job of its own to run
            continue
        r = plan.resources(RESOURCES_OF[rule])
        preds = [plan.estimate(rule, j) for j in jobs] if rule in _MODELLED and jobs else []
        devices = sorted({plan.job_device(rule, j) for j in jobs})
        known = [p for p in preds if p.known]
        seconds = sum(p.seconds for p in known) if known and len(known) == len(preds) else None
        gpu_s = (
            sum(p.seconds for p, j in zip(preds, jobs, strict=True) if _on_gpu(plan, rule, j))
            if seconds is not None
            else None
        )
        mems = [p.mem_mb for p in preds if p.mem_mb is not None]
        asked = [plan.job_resources(RESOURCES_OF[rule], j) for j in jobs]  # one per job
        limits = [a["runtime"] for a in asked]
        requests = [a["mem_mb"] for a in asked]
        limit_h = round(sum(float(x) for x in limits) / 60, 1) if limits else "–"
        bases = sorted({p.basis for p in preds}) or ["declared limits only"]
        bases = [b for b in bases if not any(o != b and o.startswith(b) for o in bases)]
        rows.append(
            {
                "rule": rule,
                "jobs": len(jobs),
                "device": "/".join(devices) or "cpu",
                "threads": r["threads"],
                "predicted h": _fmt_h(seconds),
                "GPU-h": _fmt_h(gpu_s) if gpu_s else (0.0 if seconds is not None else "–"),
                "peak MB (max)": round(max(mems)) if mems else "–",
                "mem_mb request (max)": max(requests) if requests else r["mem_mb"],
                "runtime limit h (sum)": limit_h,
                "basis": "; ".join(bases),
            }
        )
    jobs = pd.DataFrame(rows)
    return jobs, disk(plan)


_MODELLED = ("prepare", "train", "register", "evaluate")
# The resources entry of each rule (keep_field runs with the report's).
RESOURCES_OF = {
    **{r: r for r in ("download", "convert", "label", "weights", "build", "prepare", "train")},
    **{r: r for r in ("register", "evaluate", "report")},
    "keep_field": "report",
}


def _on_gpu(plan: Plan, rule: str, run) -> bool:
    return run is not None and plan.job_device(rule, run) == "cuda"


def disk(plan: Plan) -> pd.DataFrame:
    runs = plan.all_runs()
    rows = []
    # the qualitative figures' fields are kept (config fields.keep: figures)
    shown = [a for a in plan.cfg["artifacts"] if "fields" in plan.artifact_inputs(a)]
    for d in sorted({r.dataset for r in runs}):
        shape = plan.cfg["datasets"][d]["shape"]
        vox = math.prod(shape)
        scans, pairs = plan.counts(d).scans, plan.counts(d).test_pairs
        train_scans, tp = plan.counts(d).train_scans, plan.counts(d).train_pairs
        n_reg = sum(r.dataset == d for r in runs)
        n_train = len({r for r in runs if r.dataset == d and plan.trainable(r.method)})
        stages = int(plan.cfg[ENGINE_BLOCK]["stages"])
        field = vox * 12 / 1e9  # GB of one float32 field
        kept_fig = sum(
            len(plan.rows(a)) for a in shown if d in plan.cfg["artifacts"][a]["datasets"]
        )
        kept_fig = min(kept_fig, n_reg * pairs)  # one pair per figure row, if it has pairs
        rows.append(
            {
                "dataset": d,
                "scans": scans,
                "test pairs": pairs,
                "images+labels GB": round(scans * vox * 3 / 1e9, 2),
                "fields kept GB": round(kept_fig * field, 2),
                "fields of one run GB": round(pairs * field, 2),
                "every field GB": round(n_reg * pairs * field, 2),
                "every field int16 GB": round(n_reg * pairs * field / 2, 2),
                "checkpoints GB": round(n_train * (stages + 2) * CHECKPOINT_MB / 1e3, 2),
                # float32 copies of the scans trainings read (training_data.cache_dir)
                "scan cache GB": round(train_scans * vox * 4 / 1e9, 2) if n_train else 0.0,
                # a running training's pseudo-labels (two stage files at most, removed
                # when it finishes)
                "labels per training GB": round(2 * tp * vox / 8 * 12 / 1e9, 2) if n_train else 0.0,
            }
        )
    return pd.DataFrame(rows)


def _measured_on(plan: Plan) -> list[str]:
    model = plan.cost_model().get("measured", {})
    lines = []
    for kind, m in model.items():
        lines.append(
            f"  {kind}: {m.get('device', '?')}, {m.get('threads', '?')} threads, torch "
            f"{m.get('torch', '?')}, {m.get('date', '?')} (from {m.get('run', '?')})"
        )
    if "cuda" not in model:
        lines.append(
            "  cuda: not measured; GPU times are CPU times x (paper T_inf / this CPU's "
            "T_inf), an estimate: run benchmarks/gpu_smoke.sh on a GPU to measure them"
        )
    return lines


def prerequisites(plan: Plan, targets=None) -> list[str]:
    """What this machine lacks for the datasets the planned jobs read (one line each)."""
    from corereg.data.settings import SourceSettings

    arts_for_runs = _targets(plan, targets)[-1]
    datasets = sorted({d for a in arts_for_runs for d in plan.cfg["artifacts"][a]["datasets"]})
    out = []
    for d in datasets:
        src = plan.cfg["datasets"][d]["source"]
        for line in plan.source_kind(d).prerequisites(SourceSettings.of(src, d)):
            out.append(f"{d}: {line}")
    return out


def _cache_place(plan: Plan) -> str:
    where = plan.cfg["training_data"]["cache_dir"]
    return where if where else f"{plan.data_root}/<dataset>/cache (training_data.cache_dir)"


def disk_use(plan: Plan, dsk: pd.DataFrame) -> dict[str, float]:
    """GB of disk the planned jobs need at their peak (``total``, under the configured
    fields.keep and storage), split into ``images`` (prepared scans, labels, scan cache),
    ``checkpoints`` (with one running training's pseudo-label files) and the totals
    when every field is kept (``every_float32``, ``every_int16``)."""
    int16 = plan.field_storage() == "int16"
    images = float(dsk["images+labels GB"].sum() + dsk["scan cache GB"].sum())
    ckpt = float(dsk["checkpoints GB"].sum())
    if len(dsk):  # one running training's pseudo-label files
        ckpt += float(dsk["labels per training GB"].max())
    every = dsk["every field int16 GB" if int16 else "every field GB"].sum()
    kept = dsk["fields kept GB"].sum() * (0.5 if int16 else 1)
    transient = dsk["fields of one run GB"].max() * (0.5 if int16 else 1) if len(dsk) else 0
    return {
        "total": float(images + ckpt + (every if plan.keep_all_fields() else kept + transient)),
        "images": images,
        "checkpoints": ckpt,
        "every_float32": float(images + ckpt + dsk["every field GB"].sum()),
        "every_int16": float(images + ckpt + dsk["every field int16 GB"].sum()),
    }


def render(plan: Plan, targets=None) -> str:
    jobs, dsk = estimate(plan, targets)
    keep_all = plan.keep_all_fields()
    disk = disk_use(plan, dsk)
    gpu_h = pd.to_numeric(jobs["GPU-h"], errors="coerce").sum()
    pred_h = pd.to_numeric(jobs["predicted h"], errors="coerce").sum()
    lines = [
        f"corereg plan: {sum(jobs_per_rule(plan, targets).values())} jobs as `snakemake -n "
        f"{' '.join(targets or ['all'])}` counts them (target rules included), results in "
        f"{plan.results}",
        "",
        jobs.to_string(index=False),
        "",
        f"Predicted: {pred_h:.1f} h of jobs, of which {gpu_h:.1f} GPU-hours "
        "(rules with a measured cost; '–': not measured).",
        "Measured costs (workflow/costs.yaml, `corereg costs`):",
        *_measured_on(plan),
        "",
        dsk.to_string(index=False),
        "",
        f"Disk before gzip: {disk['total']:.1f} GB with fields.keep = "
        f"{'all' if keep_all else 'figures'} (fields.storage = {plan.field_storage()}); keeping"
        f" every field: {disk['every_float32']:.1f} GB as float32, "
        f"{disk['every_int16']:.1f} GB as int16.  With "
        "fields.keep = figures a run's fields exist only between its register and evaluate "
        "steps (counted: the largest run).  The scan cache of the trainings (counted) lies "
        f"in {_cache_place(plan)}.  Raw downloads come on top.",
    ]
    missing = prerequisites(plan, targets)
    lines += [
        "",
        "Missing on this machine for these jobs:" if missing else "Prerequisites: none missing.",
    ]
    lines += [f"  - {m}" for m in missing]
    return "\n".join(lines)
