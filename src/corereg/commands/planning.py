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


def verbs() -> list[Verb]:
    return [
        Verb(
            "plan",
            "jobs per rule, GPU-hours and disk of a configuration (before a run)",
            _plan_options,
            plan,
        ),
        Verb(
            "costs",
            "measure each step's time and memory from a finished paper-scale smoke run",
            _costs_options,
            costs,
        ),
    ]
