"""Output verbs: ``table``, ``figure`` (by artifact type,
:data:`corereg.adapters.ARTIFACT_TYPES`), ``claims``, ``report``, ``example`` and
``config-doc``."""

from __future__ import annotations

from pathlib import Path

from corereg.adapters.base import Verb
from corereg.commands import SPEC_HELP, manifests, read_spec
from corereg.errors import CoreregError


def scored_runs(s, who: str = "") -> None:
    """--metrics and --manifests: the runs' per-pair scores and the pairs they must cover."""
    s.add_argument("--metrics", nargs="*", default=[], help=f"{who}the runs' pairs.csv files")
    s.add_argument(
        "--manifests",
        nargs="*",
        default=[],
        help=f"{who}DATASET=PATH of each prepared dataset: every run must score its test pairs",
    )


def _read(a) -> dict:
    """Every file and folder a verb of scored runs reads, by option (for check_outputs)."""
    paths = [*(a.metrics or []), *(getattr(a, "structures", None) or [])]
    paths += list(manifests(a.manifests).values())
    paths += [item.split("=", 1)[-1] for item in getattr(a, "logs", None) or []]
    return {f"input {i + 1} ({p})": p for i, p in enumerate(paths)}


def _check_prefix(a, extensions, extra=()) -> None:
    from corereg.io import check_outputs

    names = [*(f"{a.out}.{e}" for e in extensions), *(f"{a.out}{x}" for x in extra)]
    check_outputs({f"--out ({n})": n for n in names}, _read(a))


def figure(a) -> None:
    from corereg.adapters import ARTIFACT_TYPES

    kind = ARTIFACT_TYPES[a.which]
    _check_prefix(a, kind.extensions)
    kind.write(a, read_spec(a.spec))


def table(a) -> None:
    from corereg.adapters import ARTIFACT_TYPES
    from corereg.report.tables import write_table

    _check_prefix(a, ARTIFACT_TYPES["table"].extensions, ["_structures.csv"])
    table = write_table(
        read_spec(a.spec), a.metrics, a.out, manifests(a.manifests), structure_csvs=a.structures
    )
    print(table[["row", "dataset", "status"]].to_string(index=False))


def claims(a) -> None:
    from corereg.adapters.artifact_types import labelled
    from corereg.io import check_outputs
    from corereg.report.claims import write_claims

    check_outputs({"--out-dir": a.out_dir}, _read(a))
    logs = labelled(a.logs)
    table = write_claims(
        read_spec(a.spec), a.metrics, a.structures, logs, manifests(a.manifests), a.out_dir
    )
    print(table[["id", "dataset", "verdict"]].to_string(index=False))


def config_doc(a) -> None:
    from corereg.config_doc import load_schema, render
    from corereg.io import atomic_path

    page, missing = render(load_schema(Path(a.root)))
    if missing:
        raise CoreregError(f"schema properties without a description: {', '.join(missing)}")
    out = Path(a.out)
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    print(f"[config-doc] wrote {out}")


def report(a) -> None:
    from corereg.report.html import build_report

    out = build_report(read_spec(a.spec), a.tables, a.figures, a.results, a.out, a.claims)
    print(f"[report] wrote {out}")


def example(a) -> None:
    from corereg.report import example

    if a.action in ("update", "readme"):
        from corereg.workflow import readme

        if a.action == "update":
            for path in example.update(Path(a.demo), Path(a.example)):
                print(f"[example] wrote {path}")
        print(f"[example] wrote {readme.update(Path.cwd())} (its generated numbers)")
        return
    tol = example.Tolerance(dice=a.dice_tolerance, sdlogj=a.sdlogj_tolerance, hd95=a.hd95_tolerance)
    problems = example.check(Path(a.demo), Path(a.example), tol)
    if problems:
        raise CoreregError(
            f"{a.example}: the committed example tables differ from the demo's "
            f"({len(problems)} cells; `make example` rewrites them):\n  " + "\n  ".join(problems)
        )
    print(f"[example] the committed tables in {a.example} match the demo's within tolerance")


def _table_options(s) -> None:
    s.add_argument(
        "--spec", required=True, help=SPEC_HELP + " (rows, datasets, paper values, reference row)"
    )
    scored_runs(s)
    s.add_argument(
        "--structures",
        nargs="*",
        default=None,
        help="structures.csv of the same runs: also write OUT_structures.csv (Dice per structure)",
    )
    s.add_argument("--out", required=True, help="output prefix, e.g. results/paper/tables/table1")


def _figure_options(s) -> None:
    s.add_argument("which", choices=_figure_types(), help="the artifact's type")
    s.add_argument("--spec", required=True, help=SPEC_HELP + " (rows, datasets, paper values)")
    scored_runs(s, "fig4a: ")
    s.add_argument("--logs", nargs="*", default=[], help="fig4b: LABEL=train_log.csv, one per run")
    s.add_argument("--out", required=True, help="output prefix, e.g. results/paper/figures/fig4a")


def _claims_options(s) -> None:
    s.add_argument(
        "--spec",
        required=True,
        help=SPEC_HELP + " (the claims of workflow/claims.yaml and the artifacts' rows)",
    )
    scored_runs(s)
    s.add_argument(
        "--structures",
        nargs="*",
        default=[],
        help="structures.csv of the two runs compared per structure",
    )
    s.add_argument(
        "--logs", nargs="*", default=[], help="LABEL=train_log.csv of the Figure 4b runs"
    )
    s.add_argument("--out-dir", required=True, help="folder for claims.md/.csv and per_structure.*")


def _example_options(s) -> None:
    s.add_argument(
        "action",
        choices=["update", "check", "readme"],
        help="update: copy the demo's outputs (and rewrite the README's numbers); check: "
        "compare the committed tables; readme: rewrite the README's generated numbers only",
    )
    s.add_argument("--demo", default="results/demo", help="the demo's results folder")
    s.add_argument("--example", default="results/example", help="the committed example folder")
    from corereg.report.example import Tolerance

    tol = Tolerance()
    s.add_argument(
        "--dice-tolerance",
        type=float,
        default=tol.dice,
        help=f"allowed Dice difference in points (trained rows differ between CPUs; {tol.dice:g})",
    )
    s.add_argument(
        "--sdlogj-tolerance",
        type=float,
        default=tol.sdlogj,
        help=f"allowed SDlogJ difference ({tol.sdlogj:g})",
    )
    s.add_argument(
        "--hd95-tolerance",
        type=float,
        default=tol.hd95,
        help=f"allowed HD95 difference in mm ({tol.hd95:g})",
    )


def _config_doc_options(s) -> None:
    s.add_argument("--root", default=".", help="the repository (holds workflow/schemas/)")
    s.add_argument("--out", default="docs/configuration.md", help="the page to write")


def _report_options(s) -> None:
    s.add_argument(
        "--spec", required=True, help=SPEC_HELP + " (datasets, seeds, settings in force)"
    )
    s.add_argument("--tables", nargs="+", required=True, help="the tables' .md files")
    s.add_argument("--figures", nargs="*", default=[], help="the figures' .png files")
    s.add_argument("--results", required=True, help="results folder (benchmarks/, metrics/)")
    s.add_argument(
        "--claims",
        help="claims.csv of the claims step, per_structure.csv beside it (a section of the page)",
    )
    s.add_argument("--out", required=True, help="the HTML page to write")


def verbs() -> list[Verb]:
    return [
        Verb("table", "write one paper table (CSV, Markdown, LaTeX)", _table_options, table),
        Verb("figure", "write one paper figure (PNG and PDF)", _figure_options, figure),
        Verb(
            "claims",
            "check the paper's claims one by one against this run's numbers",
            _claims_options,
            claims,
        ),
        Verb(
            "example",
            "copy the demo's tables and figures to results/example, or check them",
            _example_options,
            example,
        ),
        Verb(
            "config-doc",
            "write docs/configuration.md from the configuration schema",
            _config_doc_options,
            config_doc,
        ),
        Verb(
            "report",
            "the reproduction report: one self-contained HTML page",
            _report_options,
            report,
        ),
    ]


def _figure_types() -> list[str]:
    from corereg.adapters import ARTIFACT_TYPES

    return [t for t in ARTIFACT_TYPES if ARTIFACT_TYPES[t].rule == "figure"]
