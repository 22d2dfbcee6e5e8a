"""The cost model: each step's measured time and memory, and what a configuration needs.

``corereg costs update`` reads a finished run of the paper-scale smoke preset (the paper's
image sizes, a handful of iterations; ``make paperscale``) and writes ``workflow/costs.yaml``:
per device kind (``cpu``, ``cuda``) and paper dataset, the seconds of each unit of work
(a training iteration of each form, a pseudo-label or validation pair, the network pass and
one Adam step of a test registration, a test pair of every comparison method, the
evaluation of a pair, a job's start) and each job's peak memory.

:func:`predict` multiplies those units by a configuration's counts (the paper's 8 x 1000
iterations, 190 training pairs, 50 Adam steps, ...): ``corereg plan`` prints the result and
rule resources with ``from_costs: true`` (config ``resources``) request it with a margin, so the
SLURM time and memory requests follow from measurements.  Where a device kind has no
measurement (no GPU has run the smoke), the GPU figure is the CPU figure times the ratio of
the paper's inference time to this CPU's (T_inf, Table 1), and says so.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from corereg.errors import CoreregError, InputError
from corereg.io import read_json

COSTS_FILE = Path(__file__).resolve().parent / "costs.yaml"
MARGIN_MEASURED = 1.5  # runtime request = prediction x margin + JOB_SLACK_S
MARGIN_RATIO = 3.0  # ... for a GPU figure estimated from the CPU by the T_inf ratio
JOB_SLACK_S = 600.0
MEM_MARGIN = 1.3  # mem_mb request = peak x margin + MEM_SLACK_MB, in steps of 1000
MEM_SLACK_MB = 1024.0


@dataclass(frozen=True)
class Estimate:
    """A job's predicted wall seconds and peak memory (MB), and what they rest on."""

    seconds: float | None
    mem_mb: float | None
    basis: str  # "measured cpu", "cuda from cpu x T_inf ratio", "scaled ...", "none"

    @property
    def known(self) -> bool:
        return self.seconds is not None


def load(path: Path | str | None = None) -> dict:
    """The measured costs (``workflow/costs.yaml``); an empty model when there is none."""
    path = Path(path) if path else COSTS_FILE
    if not path.is_file():
        return {"measured": {}}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML ({exc})") from exc
    if not isinstance(data.get("measured", {}), dict):
        raise InputError(path, "'measured' must map device kinds to their measurements")
    data.setdefault("measured", {})
    return data


# ----------------------------------------------------------------------------- measuring
def _benchmark(path: Path) -> dict:
    """Seconds and peak RSS (MB) of one Snakemake benchmark file; {} when absent."""
    if not path.is_file():
        return {}
    row = pd.read_csv(path, sep="\t").iloc[-1]
    out = {"s": float(row["s"])}
    if "max_rss" in row and str(row["max_rss"]) not in ("-", "nan"):
        out["max_rss"] = float(row["max_rss"])
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return round(sum(vals) / len(vals), 4) if vals else None


def _max(values) -> float | None:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return round(max(vals), 1) if vals else None


def measure(plan) -> dict:
    """Per device kind and paper dataset, the unit costs of a finished run of ``plan``."""
    import torch

    results = Path(plan.results)
    found: dict[str, dict[str, dict]] = {}
    runs = plan.all_runs()
    for dataset in sorted({r.dataset for r in runs}):
        ds = plan.cfg["datasets"][dataset]
        key = ds.get("paper_key") or dataset
        units: dict[str, list] = {}
        peaks: dict[str, list] = {}
        devices = set()

        def add(name, value, _units=units):
            _units.setdefault(name, []).append(value)

        def peak(name, value, _peaks=peaks):
            if value is not None:
                _peaks.setdefault(name, []).append(value)

        prep = _benchmark(results / "benchmarks" / "prepare" / f"{dataset}.tsv")
        if prep:
            add("prepare_scan_s", prep["s"] / max(plan.counts(dataset).scans, 1))
            peak("prepare", prep.get("max_rss"))
        for run in (r for r in runs if r.dataset == dataset):
            kind = plan.kind(run.method)
            params = plan.method_params(run.method, run.variant)
            sub = f"{run.dataset}/{run.method}/{run.variant}/seed{run.seed}"
            if plan.trainable(run.method):
                cpath = results / "models" / sub / "costs.json"
                bench = _benchmark(results / "benchmarks" / "train" / f"{sub}.tsv")
                if cpath.is_file() and bench:
                    c = read_json(cpath)
                    if c.get("not_run"):
                        continue
                    devices.add(_device_kind(c["device"]))
                    ph = c.get("phases", {})
                    form = kind.train_form(c)
                    if "train_iteration" in ph:
                        add(f"train_iteration_s.{form}", ph["train_iteration"]["steady_s"])
                    if "pretrain_iteration" in ph:
                        add("pretrain_iteration_s", ph["pretrain_iteration"]["steady_s"])
                    kind.measure_train(ph, params, add)
                    if "validation" in ph:
                        add(f"validation_pair_s.{kind.name}", ph["validation"]["per_unit_s"])
                    accounted = sum(v["seconds"] for v in ph.values())
                    add("job_overhead_s", max(bench["s"] - accounted, 0.0))
                    # peaks per form of training (CoRe's contrastive passes hold far more)
                    where = kind.train_peak_name(form)
                    peak(where, bench.get("max_rss"))
                    peak(where, c.get("peak", {}).get("rss_mb"))
                    peak(f"gpu_{where}", c.get("peak", {}).get("cuda_reserved_mb"))
                    add("train_scans", plan.counts(dataset).train_scans)
            pairs_csv = results / "metrics" / sub / "pairs.csv"
            if not pairs_csv.is_file():
                continue
            pairs = pd.read_csv(pairs_csv)
            if "device" in pairs and pairs["device"].astype(str).str.startswith("not run").any():
                continue
            bench = _benchmark(results / "benchmarks" / "register" / f"{sub}.tsv")
            peak(f"register.{kind.name}", bench.get("max_rss"))
            if "peak_rss_mb" in pairs:
                peak(f"register.{kind.name}", pairs["peak_rss_mb"].max())
            if "peak_cuda_reserved_mb" in pairs:
                peak(f"gpu_register.{kind.name}", pairs["peak_cuda_reserved_mb"].max())
            if "device" in pairs and len(pairs):
                devices.add(_device_kind(str(pairs["device"].iloc[0])))
            kind.measure_register(pairs, params, add)
            ev = _benchmark(results / "benchmarks" / "evaluate" / f"{sub}.tsv")
            if ev:
                add("evaluate_pair_s", ev["s"] / max(len(pairs), 1))
                peak("evaluate", ev.get("max_rss"))
        if not units:
            continue
        entry: dict = {"shape": list(ds["shape"])}
        for name, vals in sorted(units.items()):
            top, _, sub_key = name.partition(".")
            value = _mean(vals)
            if sub_key:
                entry.setdefault(top, {})[sub_key] = value
            else:
                entry[top] = value
        entry["peak_mb"] = {name: _max(v) for name, v in sorted(peaks.items())}
        for device in devices or {"cpu"}:
            found.setdefault(device, {})[key] = entry
    out = {}
    for kind, datasets in found.items():
        out[kind] = {
            "device": _describe_kind(kind),
            "torch": str(torch.__version__),
            "threads": int(plan.resources("train")["threads"]),
            "run": str(results),
            "datasets": datasets,
        }
    return out


def _device_kind(described: str) -> str:
    return "cuda" if described.startswith("cuda") else "cpu"


def _describe_kind(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "CUDA GPU"
    return _cpu_model()


def update(plan, path: Path | str | None = None, date: str | None = None) -> dict:
    """Measure ``plan``'s finished run and merge it into the cost file (other device kinds
    already there are kept)."""
    import datetime

    from corereg.io import write_text

    path = (Path(path) if path else COSTS_FILE).resolve()  # write the file, not a link to it
    model = load(path)
    new = measure(plan)
    if not new:
        raise CoreregError(
            f"no measurements under {plan.results}: run the paper-scale smoke first "
            "(make paperscale) and keep its results folder"
        )
    stamp = date or datetime.date.today().isoformat()
    for kind, entry in new.items():
        model["measured"][kind] = {"date": stamp, **entry}
    header = (
        "# Measured cost of each step at the paper's image sizes, per device kind and dataset:\n"
        "# written by `corereg costs update` from a run of the paper-scale smoke preset\n"
        "# (make paperscale), read by `corereg plan` and by rule resources with from_costs: true.\n"
        "# Seconds per unit of work; peak_mb: a job's peak memory (RSS; gpu_*: CUDA reserved).\n"
    )
    write_text(path, header + yaml.safe_dump(model, sort_keys=False, width=100))
    return model


# ----------------------------------------------------------------------------- predicting
UNSCALED = {
    "search_rounds",
    "label_adam_iters",
    "niftyreg_iterations",
    "job_overhead_s",
    "train_scans",
}


class _Tracked(dict):
    """A unit table that remembers which of its (possibly borrowed) values were read."""

    def __init__(self, data, path="", used=None):
        super().__init__(data)
        self.used = used if used is not None else set()
        self.path = path

    def get(self, key, default=None):
        name = f"{self.path}{key}"
        value = super().get(key, default)
        if isinstance(value, dict):
            return _Tracked(value, f"{name}.", self.used)
        if value is not None:
            self.used.add(name)
        return value


def _units(model: dict, device: str, key: str) -> dict | None:
    """A dataset's measured units on a device kind.  Units it lacks (a job that could not
    run there) are taken from another dataset measured on the same kind, scaled by the
    ratio of voxels; ``_borrowed`` names them."""
    datasets = model.get("measured", {}).get(device, {}).get("datasets", {})
    own = datasets.get(key)
    if own is None:
        return None
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in own.items()}
    borrowed = {}
    for other_key, other in datasets.items():
        if other_key == key:
            continue
        factor = math.prod(own["shape"]) / math.prod(other["shape"])
        for name, value in other.items():
            if name == "shape":
                continue
            scale = 1.0 if name in UNSCALED else factor
            if isinstance(value, dict):
                mine = out.setdefault(name, {})
                for sub, v in value.items():
                    if v is not None and mine.get(sub) is None:
                        mine[sub] = v * scale
                        borrowed[f"{name}.{sub}"] = other_key
            elif value is not None and out.get(name) is None:
                out[name] = value * scale
                borrowed[name] = other_key
    out["_borrowed"] = borrowed
    return out


def _get(entry: dict, name: str, sub: str | None = None):
    v = entry.get(name)
    if sub is not None:
        v = v.get(sub) if isinstance(v, dict) else None
    return v


def gpu_ratio(model: dict, key: str, kind, t_inf: dict[str, float]) -> float | None:
    """GPU seconds per CPU second for a method kind (its adapter's ``gpu_ratio``): the
    paper's T_inf (``t_inf``: seconds per pair by method kind) over this CPU's."""
    cpu = _units(model, "cpu", key)
    if not cpu:
        return None
    return kind.gpu_ratio(cpu, t_inf)


def predict(plan, rule: str, run, model: dict, device: str) -> Estimate:
    """Seconds and peak memory of one job of ``rule`` for ``run`` on ``device`` (cpu|cuda)."""
    ds = plan.cfg["datasets"][run.dataset]
    key = ds.get("paper_key") or run.dataset
    kind = plan.kind(run.method) if run.method else None
    basis = f"measured {device}"
    entry = _units(model, device, key)
    factor = 1.0
    if entry is None and device == "cuda":
        entry = _units(model, "cpu", key)
        factor = gpu_ratio(model, key, kind, plan.paper_t_inf(key)) if kind else None
        if entry is None or factor is None:
            return Estimate(None, None, "not measured")
        basis = "cuda = cpu x paper T_inf ratio"
    if entry is None:
        return Estimate(None, None, "not measured")
    borrowed = entry.pop("_borrowed", {})
    entry = _Tracked(entry)
    voxels = math.prod(ds["shape"]) / math.prod(entry["shape"])
    if abs(voxels - 1) > 1e-9:
        basis += f", scaled by voxels ({voxels:.3g}x)"
    overhead = float(entry.get("job_overhead_s") or 0.0)
    counts = plan.counts(run.dataset)
    scans, test_pairs = counts.scans, counts.test_pairs
    params = plan.method_params(run.method, run.variant) if run.method else {}
    seconds = None
    mem = None

    def peak(name):
        v = _get(entry, "peak_mb", name)
        return None if v is None else float(v) * (voxels if voxels < 1 else 1.0)

    if rule == "prepare":
        if entry.get("prepare_scan_s") is not None:
            seconds = overhead + scans * entry["prepare_scan_s"] * voxels
        mem = peak("prepare")
    elif rule == "evaluate":
        if entry.get("evaluate_pair_s") is not None:
            seconds = overhead + test_pairs * entry["evaluate_pair_s"] * voxels
        mem = peak("evaluate")
    elif rule == "train":
        seconds = kind.train_seconds(plan, run, params, entry, voxels, factor)
        mem = peak(kind.train_peak_name(kind.planned_form(params)))
        if mem is not None and plan.cfg["training_data"]["on_device"] is True:
            # every training scan held as float32 (in host memory on the CPU); otherwise
            # scans are read per batch and the memory does not grow with the dataset
            extra = counts.train_scans - int(entry.get("train_scans") or 0)
            if plan.job_device("train", run) == "cpu":
                mem += max(extra, 0) * math.prod(ds["shape"]) * 4 / 2**20
        if seconds is not None:
            seconds += overhead
    elif rule == "register":
        seconds = kind.register_seconds(params, entry, voxels, factor, test_pairs)
        if seconds is not None:
            seconds += overhead
        mem = peak(f"register.{kind.name}")
    if seconds is None:
        return Estimate(None, mem, "not measured")
    lent = sorted({borrowed[n] for n in entry.used if n in borrowed})
    if lent:
        basis += f", some units from {', '.join(lent)} scaled by voxels"
    return Estimate(seconds, mem, basis)


def request(estimate: Estimate) -> tuple[int | None, int | None]:
    """(runtime minutes, mem_mb) to request for a job with this estimate."""
    minutes = mem = None
    if estimate.seconds is not None:
        margin = MARGIN_RATIO if "ratio" in estimate.basis else MARGIN_MEASURED
        minutes = max(10, math.ceil((estimate.seconds * margin + JOB_SLACK_S) / 60))
    if estimate.mem_mb is not None:
        mem = int(math.ceil((estimate.mem_mb * MEM_MARGIN + MEM_SLACK_MB) / 1000) * 1000)
    return minutes, mem
