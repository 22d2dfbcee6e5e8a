"""Data verbs: ``prepare`` and the steps before it (download, convert, label), each run
by the dataset's source kind (:data:`corereg.adapters.SOURCE_KINDS`)."""

from __future__ import annotations

from corereg.adapters.base import Verb
from corereg.commands import SPEC_HELP, config_options, read_spec
from corereg.errors import CoreregError


def _source(spec: dict, dataset: str):
    from corereg.adapters import SOURCE_KINDS
    from corereg.data.settings import SourceSettings

    source = SourceSettings.of(spec["source"], f"datasets.{dataset}.source")
    return SOURCE_KINDS[source.kind], source


def prepare(a) -> None:
    spec = read_spec(a.spec)
    if "source" not in spec:
        raise CoreregError("--spec: the dataset's entry has no 'source'")
    kind, source = _source(spec, a.dataset)
    from corereg.io import check_outputs

    check_outputs({"--out": a.out}, {"--raw": a.raw})
    kind.prepare(a, spec, source)
    print(f"[prepare] {a.dataset}: wrote {a.out}")


def _prepare_options(s) -> None:
    s.add_argument("--dataset", required=True, help="the dataset's key in the configuration")
    s.add_argument("--spec", required=True, help=SPEC_HELP + " (the dataset's entry)")
    s.add_argument("--raw", help="real data: the previous step's folder (download or label)")
    s.add_argument("--out", required=True, help="the prepared dataset's folder")


def _stage_spec(a) -> dict:
    """The step's settings: ``--spec`` (what the workflow passes), else the dataset's entry
    in the configuration (``--config`` and ``--configfile``, as for snakemake)."""
    if a.spec:
        return read_spec(a.spec)
    from corereg import config
    from corereg.workflow.jobs import Plan

    plan = Plan(config.load(a.config, a.configfile))
    if a.dataset not in plan.cfg["datasets"]:
        raise CoreregError(
            f"{a.config or 'config.yaml'}: no dataset '{a.dataset}' "
            f"(datasets: {', '.join(plan.cfg['datasets'])})"
        )
    return plan.stage_spec(a.dataset, a.verb)


def stage(a) -> None:
    """A data step of the dataset's source kind (download, convert, label)."""
    spec = _stage_spec(a)
    kind, source = _source(spec, a.dataset)
    from corereg.io import check_outputs

    check_outputs({"--out": a.out}, {"--input": a.input})
    kind.run_stage(a.verb, a, spec, source)


STAGE_HELP = {
    "download": "download a real dataset (checksums verified, resumable)",
    "convert": "convert and resample a dataset's scans to the configured grid (RAD-ChestCT)",
    "label": "label a dataset with TotalSegmentator (--check: is it ready?)",
}


def _stage_options(name: str):
    def options(s) -> None:
        s.add_argument(
            "--dataset", required=True, help="a key of datasets, e.g. abdomen or radchest"
        )
        s.add_argument("--spec", help=SPEC_HELP + "; default: the dataset's entry in --config")
        config_options(s)
        s.add_argument(
            "--input",
            help="the previous step's folder (convert: the download; label: the converted scans)",
        )
        s.add_argument("--out", required=name != "label", help="output folder")
        if name == "label":
            s.add_argument(
                "--check",
                action="store_true",
                help="only say what is missing (tool, weights, licence, GPU)",
            )

    return options


def verbs() -> list[Verb]:
    """prepare, then the steps the registered source kinds declare (in chain order)."""
    from corereg.adapters import SOURCE_KINDS

    stages = dict.fromkeys(s for k in SOURCE_KINDS for s in SOURCE_KINDS[k].stages)
    out = [
        Verb(
            "prepare",
            "write a prepared dataset: images, labels and manifest.json",
            _prepare_options,
            prepare,
        )
    ]
    for name in stages:
        out.append(
            Verb(name, STAGE_HELP.get(name, f"the {name} step"), _stage_options(name), stage)
        )
    return out
