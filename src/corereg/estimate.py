"""``corereg plan``: jobs per rule, GPU-hours and disk for a configuration, before a run.

Job counts follow the workflow's own plan (the same :class:`corereg.plan.Plan` the
Snakefile uses).  Time has two columns: an upper bound (jobs × the rule's declared
``runtime`` limit, which is what a SLURM allocation reserves) and, when benchmark
files of an earlier run exist under ``results/benchmarks/<rule>/``, an estimate
from their mean.  Disk is computed from the dataset shapes: images and labels
(int16 + uint8), displacement fields (3 × float32 per voxel, per registered pair,
before gzip) and checkpoints.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from corereg.errors import InputError
from corereg.plan import PAPER_COUNTS, TABLES, Plan

CHECKPOINT_MB = 4.0  # FeatureNet: about 0.9 M float32 parameters plus optimiser state


def _counts(plan: Plan, dataset: str) -> tuple[int, int]:
    """(scans, test pairs) of a dataset, from its source description or the paper."""
    ds = plan.cfg["datasets"][dataset]
    src = ds["source"]
    if src["kind"] == "synthetic_abdomen":
        n_test = int(src["n_test"])
        return int(src["n_train"]) + n_test, n_test * (n_test - 1) // 2
    if src["kind"] == "synthetic_chest":
        return 2 * (int(src["n_train_pairs"]) + int(src["n_test_pairs"])), int(src["n_test_pairs"])
    paper = PAPER_COUNTS.get(ds.get("paper_key"), {})
    test = int(paper.get("test pairs", 0))
    if src["kind"] == "abdomenctct":
        return 30, test
    return 2 * int(src.get("n_pairs", test + int(paper.get("train pairs", 0)))), test


def jobs_per_rule(plan: Plan) -> dict[str, int]:
    runs = plan.all_runs()
    datasets = sorted({d for art in plan.cfg["artifacts"].values() for d in art["datasets"]})
    jobs = {"prepare": len(datasets)}
    for stage in ("download", "convert", "label"):
        n = sum(stage in plan.stages(d) for d in datasets)
        if n:
            jobs[stage] = n
    weights = {plan.weights(m) for m in {r.method for r in runs}} - {None}
    if weights:
        jobs["weights"] = len(weights)  # released weights of pretrained methods, fetched once
    jobs["train"] = len({r for r in runs if plan.trainable(r.method)})
    jobs["register"] = jobs["evaluate"] = len(runs)
    figures = [a for a in plan.cfg["artifacts"] if a not in TABLES]
    # tables, figures, the claims and the reproduction report
    jobs["report"] = len([a for a in plan.cfg["artifacts"] if a in TABLES]) + len(figures) + 2
    return jobs


def benchmark_seconds(rule_dir: Path, strict: bool = True) -> list[float]:
    """Wall seconds of every job of a rule from Snakemake's benchmark files under ``rule_dir``.
    A file that is not a benchmark file raises (``strict``) or is skipped."""
    out = []
    for tsv in sorted(Path(rule_dir).rglob("*.tsv")):
        try:
            out.append(float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1]))
        except (KeyError, IndexError, ValueError, pd.errors.ParserError) as exc:
            if strict:
                raise InputError(tsv, f"not a Snakemake benchmark file ({exc})") from exc
    return out


def _benchmark_mean_s(results: Path, rule: str) -> float | None:
    vals = benchmark_seconds(results / "benchmarks" / rule, strict=False)
    return sum(vals) / len(vals) if vals else None


def estimate(plan: Plan) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    results = Path(plan.results)
    runs = plan.all_runs()
    for rule, n in jobs_per_rule(plan).items():
        r = plan.resources(rule)
        gpu = int(r["gpu"])
        # registration asks for a GPU only for methods that use one (as the register rule does)
        gpu_jobs = (
            sum(min(int(plan.method(x.method).get("gpu", 0)), gpu) > 0 for x in runs)
            if rule == "register"
            else (n if gpu else 0)
        )
        limit_h = float(r["runtime"]) / 60
        mean_s = _benchmark_mean_s(results, rule)
        rows.append(
            {
                "rule": rule,
                "jobs": n,
                "GPU jobs": gpu_jobs,
                "threads": r["threads"],
                "mem_mb": r["mem_mb"],
                "runtime limit h (sum)": round(n * limit_h, 1),
                "GPU-h upper bound": round(gpu_jobs * gpu * limit_h, 1),
                "GPU-h from benchmarks": "–"
                if mean_s is None
                else round(gpu_jobs * gpu * mean_s / 3600, 2),
            }
        )
    jobs = pd.DataFrame(rows)
    disk = []
    for d in sorted({r.dataset for r in runs}):
        shape = plan.cfg["datasets"][d]["shape"]
        vox = math.prod(shape)
        scans, pairs = _counts(plan, d)
        n_reg = sum(r.dataset == d for r in runs)
        n_train = len({r for r in runs if r.dataset == d and plan.trainable(r.method)})
        stages = int(plan.cfg.get("engine", {}).get("stages", 8))
        disk.append(
            {
                "dataset": d,
                "scans": scans,
                "test pairs": pairs,
                "images+labels GB": round(scans * vox * 3 / 1e9, 2),
                "fields GB": round(n_reg * pairs * vox * 12 / 1e9, 2),
                "checkpoints GB": round(n_train * (stages + 2) * CHECKPOINT_MB / 1e3, 2),
            }
        )
    return jobs, pd.DataFrame(disk)


def render(plan: Plan) -> str:
    jobs, disk = estimate(plan)
    total_gpu = jobs["GPU-h upper bound"].sum()
    lines = [
        f"corereg plan: {int(jobs.jobs.sum())} jobs, results in {plan.results}",
        "",
        jobs.to_string(index=False),
        "",
        f"GPU-hours, upper bound from the declared runtime limits: {total_gpu:.1f}",
        "",
        disk.to_string(index=False),
        "",
        f"Disk before gzip: {disk[['images+labels GB', 'fields GB', 'checkpoints GB']].to_numpy().sum():.1f} GB "
        "(NIfTI fields are stored gzip-compressed; raw downloads come on top).",
    ]
    return "\n".join(lines)
