"""Planning verbs: ``plan`` (jobs, hours, memory and disk before a run) and ``costs``
(the measured cost model from a finished paper-scale smoke run)."""

from __future__ import annotations

from pathlib import Path

from corereg.adapters.base import Verb


def plan(a) -> None:
    from corereg import config
    from corereg.workflow.compute_plan import render
    from corereg.workflow.jobs import Plan

    print(render(Plan(config.load(a.config, a.configfile)), a.targets or None))


def doctor(a) -> None:
    """What this machine lacks for the demo, the tests and the full runs: one line each."""
    import shutil
    import sys
    import sysconfig

    from corereg import config
    from corereg.errors import CoreregError
    from corereg.workflow.compute_plan import estimate, prerequisites
    from corereg.workflow.jobs import Plan

    problems, notes = [], []
    if sys.version_info[:2] != (3, 11):
        problems.append(f"Python {sys.version.split()[0]}: the pinned environment needs 3.11")
    for tool, why in (
        ("c++", "a C++ compiler builds NiftyReg and DEEDs (make install)"),
        ("cmake", "cmake builds NiftyReg (make install)"),
    ):
        if shutil.which(tool) is None:
            problems.append(f"no {tool} on PATH: {why}")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        problems.append("no Python.h: install the Python 3.11 headers (e.g. python3.11-dev)")
    if not shutil.which("conda"):  # Snakemake calls conda itself, mamba or not
        notes.append(
            "no conda: `snakemake --use-conda` needs it (e.g. Miniforge); without it run the full "
            "workflow from .venv (`make install`) and leave out --use-conda (on SLURM: "
            "use-conda: false in profiles/slurm/config.yaml)"
        )
    plan = Plan(config.load(a.config, a.configfile))
    try:
        import torch

        if not torch.cuda.is_available():
            line = "no CUDA GPU visible: the trainings run on the CPU (minutes for the demo, "
            line += "months for the paper run)"
            (problems if str(plan.cfg["device"]).startswith("cuda") else notes).append(line)
    except ImportError:
        problems.append("torch is not importable: run `make install`")
    _, dsk = estimate(plan, a.targets or None)
    need = float(dsk["images+labels GB"].sum() + dsk["scan cache GB"].sum())
    where = next(p for p in Path(plan.data_root).resolve().parents if p.exists())
    free = shutil.disk_usage(where).free / 1e9
    if need > free:
        problems.append(
            f"disk: about {need:,.0f} GB of data for these targets, {free:,.0f} GB free"
        )
    problems += prerequisites(plan, a.targets or None)
    for p in notes:
        print(f"[doctor] note: {p}")
    for p in problems:
        print(f"[doctor] {p}")
    if problems:
        raise CoreregError(f"{len(problems)} things missing (above)")
    print("[doctor] nothing missing")


def costs(a) -> None:
    import yaml

    from corereg import config
    from corereg.workflow import costs
    from corereg.workflow.jobs import Plan

    plan = Plan(config.load(a.config, a.configfile))
    if a.action == "update":
        model = costs.update(plan, a.out)
        print(f"[costs] wrote {(Path(a.out) if a.out else costs.COSTS_FILE).resolve()}")
    else:
        model = {"measured": costs.measure(plan)}
    print(yaml.safe_dump(model, sort_keys=False, width=100))


def _plan_options(s) -> None:
    s.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="what to plan, as for snakemake: all (default), claims, or artifacts (table2, fig3, ...)",
    )
    s.add_argument("--config", help="configuration file (default: ./config.yaml)")
    s.add_argument(
        "--configfile", nargs="*", default=[], help="presets merged over it, as for snakemake"
    )


def _costs_options(s) -> None:
    s.add_argument(
        "action",
        choices=["show", "update"],
        help="show: print what the run measured; update: merge it into the cost file "
        "that `corereg plan` and resources with from_costs: true use",
    )
    s.add_argument("--config", help="configuration file (default: ./config.yaml)")
    s.add_argument(
        "--configfile",
        nargs="*",
        default=["workflow/presets/paperscale.yaml"],
        help="the presets of the measured run (default: workflow/presets/paperscale.yaml)",
    )
    s.add_argument(
        "--out", help="cost file to update (default: the pipeline's workflow/costs.yaml)"
    )


def _doctor_options(s) -> None:
    _plan_options(s)


def verbs() -> list[Verb]:
    return [
        Verb(
            "plan",
            "jobs per rule, GPU-hours and disk of a configuration (before a run)",
            _plan_options,
            plan,
        ),
        Verb(
            "doctor",
            "what this machine lacks for the demo, the tests or a full run (one line each)",
            _doctor_options,
            doctor,
        ),
        Verb(
            "costs",
            "measure each step's time and memory from a finished paper-scale smoke run",
            _costs_options,
            costs,
        ),
    ]
