"""corereg VERB: the one entry point of every Snakemake rule (see DESCRIPTION)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from corereg import __version__, not_run
from corereg.errors import CoreregError, ToolMissing


def _spec(value: str | None) -> dict:
    if not value:
        return {}
    if value.startswith("@"):
        return json.loads(Path(value[1:]).read_text())
    return json.loads(value)


# ----------------------------------------------------------------------------- data
def cmd_prepare(a) -> None:
    from corereg.data.settings import SourceSettings
    from corereg.data.synthetic import generate_abdomen, generate_chest
    from corereg.errors import NotImplementedYet

    spec = _spec(a.spec)
    source = SourceSettings.of(spec["source"], f"datasets.{a.dataset}.source")
    kind = source.kind
    if kind == "synthetic_abdomen":
        generate_abdomen(
            a.out,
            a.dataset,
            spec["shape"],
            spec["spacing"],
            source.n_train,
            source.n_test,
            source.seed,
            noise_hu=source.noise_hu,
        )
    elif kind == "synthetic_chest":
        generate_chest(
            a.out,
            a.dataset,
            spec["shape"],
            spec["spacing"],
            source.n_train_pairs,
            source.n_test_pairs,
            source.seed,
            noise_hu=source.noise_hu,
        )
    elif kind == "abdomenctct":
        from corereg.data import abdomenctct

        if not a.raw:
            raise CoreregError("prepare of abdomenctct needs --raw (the unpacked download)")
        abdomenctct.prepare(a.raw, a.out, a.dataset, spec)
    elif kind == "radchestct":
        from corereg.data import radchestct

        if not a.raw:
            raise CoreregError("prepare of radchestct needs --raw (the label folder)")
        radchestct.prepare(a.raw, a.out, a.dataset, spec)
    else:
        raise NotImplementedYet(f"preparation of '{kind}' data")
    print(f"[prepare] {a.dataset}: wrote {a.out}")


def _stage_spec(a) -> dict:
    """The step's settings: ``--spec`` (what the workflow passes), else the dataset's entry
    in the configuration (``--config`` and ``--configfile``, as for snakemake)."""
    if a.spec:
        return _spec(a.spec)
    from corereg import config
    from corereg.workflow.jobs import Plan

    plan = Plan(config.load(a.config, a.configfile))
    if a.dataset not in plan.cfg["datasets"]:
        raise CoreregError(
            f"{a.config or 'config.yaml'}: no dataset '{a.dataset}' "
            f"(datasets: {', '.join(plan.cfg['datasets'])})"
        )
    return plan.stage_spec(a.dataset, a.verb)


def cmd_stage(a) -> None:
    """download / convert / label of real data: the steps of the full reproduction."""
    from corereg.data.settings import SourceSettings
    from corereg.errors import NotImplementedYet

    spec = _stage_spec(a)
    source = SourceSettings.of(spec["source"], f"datasets.{a.dataset}.source")
    kind = source.kind
    if a.verb == "download" and kind == "abdomenctct":
        from corereg.data import abdomenctct

        abdomenctct.fetch(source, a.out, dataset=a.dataset)
        return
    if kind == "radchestct" and a.verb in ("download", "convert"):
        from corereg.data import radchestct

        if a.verb == "download":
            radchestct.fetch(source, a.out, dataset=a.dataset)
        else:
            radchestct.convert(a.input, a.out, spec)
        return
    if kind == "radchestct" and a.verb == "label":
        from corereg.data import radchestct, totalseg

        cfg = source.totalsegmentator
        if a.check:
            problems = totalseg.check(cfg)
            if problems:
                raise CoreregError("TotalSegmentator is not ready:\n  " + "\n  ".join(problems))
            print(f"[label] TotalSegmentator {cfg.version}: ready")
            return
        if not a.input or not a.out:
            raise CoreregError("label needs --input (the converted scans) and --out")
        totalseg.label(a.input, a.out, cfg)
        radchestct.finish_label(a.input, a.out)
        return
    raise NotImplementedYet(
        f"{a.verb} for datasets of kind '{kind}' (synthetic data need only prepare)"
    )


def cmd_fetch_weights(a) -> None:
    """Download a method's released weights (size and md5 recorded beside them on first use)."""
    from corereg.data.sources import ChecksumLock, download

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = ChecksumLock(out.parent / "checksums.json")
    try:
        download(a.url, out, md5=None if a.md5 == "none" else a.md5, lock=lock)
    except CoreregError as exc:
        if a.if_missing != "report":
            raise
        # offline machine: a small record in place of the weights; the method's rows then read
        # "not run: <reason>" instead of the whole table failing
        not_run.write_record(
            out,
            f"its weights could not be downloaded ({exc}); delete {out} to retry, "
            "or set params.weights to a local copy",
        )


def cmd_build_deedsbcv(a) -> None:
    """Compile deedsBCV and linearBCV from a user's checkout (DEEDs, implementation deedsbcv)."""
    from corereg.baselines import deedsbcv

    try:
        deedsbcv.build(a.source, a.out)
    except ToolMissing as exc:  # no compiler or zlib here: the DEEDs rows say so
        if a.if_missing != "report":
            raise
        deedsbcv.write_not_run(a.out, exc.reason)


# ----------------------------------------------------------------------------- training
def cmd_train(a) -> None:
    from corereg.baselines import learned
    from corereg.data.manifest import load_manifest
    from corereg.device import resolve_device, set_threads
    from corereg.errors import NotImplementedYet

    spec = _spec(a.spec)
    if spec.get("kind") == "engine":
        from corereg.training.selftrain import train
    elif spec.get("kind") in learned.MODELS:
        train = learned.train
    else:
        raise NotImplementedYet(
            f"training of method kind '{spec.get('kind')}' (method {a.method}/{a.variant})"
        )

    set_threads(a.threads)
    try:
        final = train(load_manifest(a.data), spec, resolve_device(a.device), a.out)
    except ToolMissing as exc:
        if a.if_missing != "report":
            raise
        final = not_run.write_model(a.out, spec.get("kind"), exc.reason)
    print(f"[train] wrote {final}")


# ----------------------------------------------------------------------------- registration
def cmd_register(a) -> None:
    from corereg.data.manifest import load_manifest
    from corereg.device import describe, resolve_device, set_threads
    from corereg.errors import InputError
    from corereg.io import (
        atomic_dir,
        check_replaceable,
        load_image,
        save_field,
        write_csv,
        write_json,
    )
    from corereg.measure import peak_memory
    from corereg.registration import (
        check_field,
        check_pair,
        make_method,
        register_manifest,
        timed_register,
    )

    set_threads(a.threads)
    device = resolve_device(a.device)
    params = _spec(a.params)
    if a.manifest and not a.out_dir:
        raise CoreregError("--manifest needs --out-dir")
    try:
        method = make_method(a.method, params, device, a.checkpoint, a.seed)
    except ToolMissing as exc:
        if a.if_missing != "report" or not a.manifest:
            raise
        not_run.write_fields(a.out_dir, a.method, exc.reason)
        return
    if a.manifest:
        check_replaceable(a.out_dir)  # before hours of registration, not after
        manifest = load_manifest(a.manifest)
        with atomic_dir(a.out_dir) as tmp:
            timing = register_manifest(
                manifest, method, tmp, split=a.split, field_storage=a.field_storage
            )
            # the job's peak memory on every row (evaluate carries it into pairs.csv)
            timing = timing.assign(**{f"peak_{k}": v for k, v in peak_memory(device).items()})
            write_csv(tmp / "timing.csv", timing)
            write_json(
                tmp / "run.json",
                {
                    "method": a.method,
                    "params": params,
                    "seed": a.seed,
                    "checkpoint": a.checkpoint,
                    "device": describe(device),
                    "corereg": __version__,
                    "manifest": str(a.manifest),
                },
            )
        return
    if not (a.fixed and a.moving and a.out):
        raise CoreregError(
            "give --fixed, --moving and --out (one pair) or --manifest and --out-dir"
        )
    if Path(a.out).is_dir():
        raise InputError(
            a.out, "is a folder; give the field's file name, e.g. disp_0001_0002.nii.gz"
        )
    fixed, affine = load_image(a.fixed)
    moving, moving_affine = load_image(a.moving)
    check_pair(a.fixed, fixed, a.moving, moving, affine, moving_affine)
    disp, secs = timed_register(method, fixed, moving)
    check_field(f"{a.method}, pair {a.fixed} <- {a.moving}", disp, fixed.shape)
    save_field(a.out, disp, affine, a.field_storage)
    print(json.dumps({"out": a.out, "seconds": round(secs, 4), "device": describe(device)}))


# ----------------------------------------------------------------------------- evaluation
def cmd_keep_field(a) -> None:
    import shutil

    from corereg.data.manifest import field_name, load_manifest
    from corereg.errors import InputError
    from corereg.io import atomic_dir

    manifest = load_manifest(a.manifest)
    pairs = manifest.pairs("test")
    if not 0 <= a.pair_index < len(pairs):
        raise InputError(
            manifest.path, f"pair index {a.pair_index} is outside its {len(pairs)} test pairs"
        )
    pair = pairs[a.pair_index]
    src = Path(a.fields)
    record = src / not_run.RECORD
    name = field_name(pair["fixed"], pair["moving"])
    if not record.is_file() and not (src / name).is_file():
        raise InputError(src / name, "file does not exist (the register step wrote no such field)")
    with atomic_dir(a.out_dir) as tmp:
        for f in (record, src / name):
            if f.is_file():
                shutil.copyfile(f, tmp / f.name)


def cmd_evaluate(a) -> None:
    from corereg.data.manifest import load_manifest
    from corereg.evaluation_run import evaluate_run

    spec = _spec(a.spec)
    evaluate_run(load_manifest(a.manifest), Path(a.fields), spec, a.out_structures, a.out_pairs)


# ----------------------------------------------------------------------------- outputs
def _manifests(items) -> dict[str, str]:
    """DATASET=PATH arguments -> {dataset: prepared folder}."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise CoreregError(f"--manifests takes DATASET=PATH, not '{item}'")
        ds, path = item.split("=", 1)
        out[ds] = path
    return out


def cmd_table(a) -> None:
    from corereg.report.tables import write_table

    table = write_table(
        _spec(a.spec), a.metrics, a.out, _manifests(a.manifests), structure_csvs=a.structures
    )
    print(table[["row", "dataset", "status"]].to_string(index=False))


def cmd_figure(a) -> None:
    from corereg.report import figures

    spec = _spec(a.spec)
    if a.which == "fig4a":
        figures.fig4a(spec, a.metrics, a.out, _manifests(a.manifests))
    elif a.which == "fig4b":
        logs = {}
        for item in a.logs or []:
            label, path = item.split("=", 1)
            logs.setdefault(label, []).append(path)
        figures.fig4b(spec, logs, a.out)
    else:
        from corereg.report.qualitative import fig3_from_spec

        fig3_from_spec(spec, a.out)


def cmd_plan(a) -> None:
    from corereg import config
    from corereg.workflow.compute_plan import render
    from corereg.workflow.jobs import Plan

    print(render(Plan(config.load(a.config, a.configfile))))


def cmd_costs(a) -> None:
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


def cmd_claims(a) -> None:
    from corereg.report.claims import write_claims

    logs: dict[str, list[str]] = {}
    for item in a.logs or []:
        label, path = item.split("=", 1)
        logs.setdefault(label, []).append(path)
    table = write_claims(
        _spec(a.spec), a.metrics, a.structures, logs, _manifests(a.manifests), a.out_dir
    )
    print(table[["id", "dataset", "verdict"]].to_string(index=False))


def cmd_config_doc(a) -> None:
    from corereg.config_doc import load_schema, render
    from corereg.io import atomic_path

    page, missing = render(load_schema(Path(a.root)))
    if missing:
        raise CoreregError(f"schema properties without a description: {', '.join(missing)}")
    out = Path(a.out)
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    print(f"[config-doc] wrote {out}")


def cmd_report(a) -> None:
    from corereg.report.html import build_report

    out = build_report(_spec(a.spec), a.tables, a.figures, a.results, a.out, a.claims)
    print(f"[report] wrote {out}")


def cmd_example(a) -> None:
    from corereg.report import example

    if a.action == "update":
        for path in example.update(Path(a.demo), Path(a.example)):
            print(f"[example] wrote {path}")
        return
    tol = example.Tolerance(dice=a.dice_tolerance, sdlogj=a.sdlogj_tolerance, hd95=a.hd95_tolerance)
    problems = example.check(Path(a.demo), Path(a.example), tol)
    if problems:
        raise CoreregError(
            f"{a.example}: the committed example tables differ from the demo's "
            f"({len(problems)} cells; `make example` rewrites them):\n  " + "\n  ".join(problems)
        )
    print(f"[example] the committed tables in {a.example} match the demo's within tolerance")


DESCRIPTION = """\
corereg: the steps of the CoRe reproduction workflow, one verb per step.

Snakemake calls these verbs with explicit paths and the step's settings as JSON
(--spec, resolved from config.yaml and its presets).  Every verb also runs on its
own; the verbs a user runs by hand (plan, label --check, download, register of one
pair, example) read config.yaml or take plain options.  A problem with the input is
one line "error: <file>: <problem>" and exit status 1.
"""

SPEC_HELP = (
    "the step's settings as JSON, or @FILE holding it; the workflow writes it from "
    "config.yaml and its presets"
)
DEVICE_HELP = "torch device: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N"
THREADS_HELP = "CPU threads for torch (default: torch's own choice)"
IF_MISSING_HELP = (
    "what to do when the method's tool is not installed: fail, or report (write a "
    "record that the tables show as 'not run: <reason>')"
)


def build_parser() -> argparse.ArgumentParser:
    from corereg.registration.registry import KINDS

    p = argparse.ArgumentParser(
        prog="corereg",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"corereg {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, text: str):
        return sub.add_parser(name, help=text, description=text)

    def scored_runs(s, who: str = "") -> None:
        """--metrics and --manifests: the runs' per-pair scores and the pairs they must cover."""
        s.add_argument("--metrics", nargs="*", default=[], help=f"{who}the runs' pairs.csv files")
        s.add_argument(
            "--manifests",
            nargs="*",
            default=[],
            help=f"{who}DATASET=PATH of each prepared dataset: every run must score its test pairs",
        )

    s = verb("prepare", "write a prepared dataset: images, labels and manifest.json")
    s.add_argument("--dataset", required=True, help="the dataset's key in the configuration")
    s.add_argument("--spec", required=True, help=SPEC_HELP + " (the dataset's entry)")
    s.add_argument("--raw", help="real data: the previous step's folder (download or label)")
    s.add_argument("--out", required=True, help="the prepared dataset's folder")
    s.set_defaults(func=cmd_prepare)

    stage_help = {
        "download": "download a real dataset (checksums verified, resumable)",
        "convert": "convert and resample RAD-ChestCT scans to the paper's grid",
        "label": "label RAD-ChestCT with TotalSegmentator (--check: is it ready?)",
    }
    for name in ("download", "convert", "label"):
        s = verb(name, stage_help[name])
        s.add_argument(
            "--dataset", required=True, help="a key of datasets, e.g. abdomen or radchest"
        )
        s.add_argument("--spec", help=SPEC_HELP + "; default: the dataset's entry in --config")
        s.add_argument("--config", help="configuration file (default: ./config.yaml)")
        s.add_argument("--configfile", nargs="*", default=[], help="presets merged over it")
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
        s.set_defaults(func=cmd_stage)

    s = verb("fetch-weights", "download a pretrained method's released weights")
    s.add_argument("--url", required=True, help="where the weights are published")
    s.add_argument(
        "--md5",
        default="none",
        help="expected MD5, or none (size and MD5 are recorded on the first download)",
    )
    s.add_argument("--out", required=True, help="the weights file to write")
    s.add_argument(
        "--if-missing",
        choices=["report", "fail"],
        default="fail",
        help="download fails: fail, or write a 'not run' record the tables report",
    )
    s.set_defaults(func=cmd_fetch_weights)

    s = verb("build-deedsbcv", "compile deedsBCV and linearBCV from a source checkout")
    s.add_argument("--source", required=True, help="a checkout of github.com/mattiaspaul/deedsBCV")
    s.add_argument("--out", required=True, help="folder for the binaries and build.json")
    s.add_argument(
        "--if-missing",
        choices=["report", "fail"],
        default="fail",
        help="no compiler or zlib: fail, or write a 'not run' record the tables report",
    )
    s.set_defaults(func=cmd_build_deedsbcv)

    s = verb("train", "train a learning-based method (CoRe, Bigalke et al., VoxelMorph, LapIRN)")
    s.add_argument("--data", required=True, help="prepared dataset folder")
    s.add_argument("--method", required=True, help="the method's key in the configuration (logs)")
    s.add_argument("--variant", default="default", help="the variant's key (logs)")
    s.add_argument("--seed", type=int, default=0, help="training seed")
    s.add_argument("--spec", required=True, help=SPEC_HELP + " (kind, params, dataset entry, seed)")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    s.add_argument("--out", required=True, help="model folder (final.pt, train_log.csv)")
    s.add_argument("--if-missing", choices=["report", "fail"], default="fail", help=IF_MISSING_HELP)
    s.set_defaults(func=cmd_train)

    s = verb("register", "register one pair (--fixed, --moving, --out) or every pair of a split")
    s.add_argument(
        "--method", required=True, metavar="KIND", help=f"method kind: {', '.join(KINDS)}"
    )
    s.add_argument(
        "--params", help="method parameters as JSON or @FILE (default: the method's own)"
    )
    s.add_argument("--fixed", help="fixed image (NIfTI)")
    s.add_argument("--moving", help="moving image (NIfTI), on the fixed image's grid")
    s.add_argument("--out", help="output field, e.g. disp_<fixed>_<moving>.nii.gz")
    s.add_argument("--manifest", help="prepared dataset folder or its manifest.json")
    s.add_argument("--split", default="test", help="which pairs of the manifest (default: test)")
    s.add_argument("--out-dir", help="with --manifest: folder for the fields and timing.csv")
    s.add_argument(
        "--field-storage",
        choices=["float32", "int16"],
        default="float32",
        help="how the fields are stored: float32 (default) or int16 with the NIfTI scale "
        "factor (half the size, within max|d|/65534 voxels of float32)",
    )
    s.add_argument("--checkpoint", help="trained model (engine, voxelmorph, lapirn): final.pt")
    s.add_argument("--seed", type=int, default=0, help="seed of any random step")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    s.add_argument("--if-missing", choices=["report", "fail"], default="fail", help=IF_MISSING_HELP)
    s.set_defaults(func=cmd_register)

    s = verb("keep-field", "copy the field of one test pair out of a run's fields (for figures)")
    s.add_argument("--fields", required=True, help="the register step's folder")
    s.add_argument("--manifest", required=True, help="prepared dataset folder or manifest.json")
    s.add_argument(
        "--pair-index", type=int, required=True, help="position in the manifest's test pairs"
    )
    s.add_argument("--out-dir", required=True, help="folder for the copied field")
    s.set_defaults(func=cmd_keep_field)

    s = verb("evaluate", "Dice, HD95, SDlogJ and folding of a folder of fields")
    s.add_argument("--manifest", required=True, help="prepared dataset folder or manifest.json")
    s.add_argument("--fields", required=True, help="the register step's folder")
    s.add_argument(
        "--spec",
        required=True,
        help=SPEC_HELP + " (dataset, method, variant, seed, evaluated labels)",
    )
    s.add_argument("--out-structures", required=True, help="per pair and structure CSV")
    s.add_argument("--out-pairs", required=True, help="per pair CSV")
    s.set_defaults(func=cmd_evaluate)

    s = verb("table", "write one paper table (CSV, Markdown, LaTeX)")
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
    s.set_defaults(func=cmd_table)

    s = verb("figure", "write one paper figure (PNG and PDF)")
    s.add_argument("which", choices=["fig3", "fig4a", "fig4b"], help="which figure")
    s.add_argument("--spec", required=True, help=SPEC_HELP + " (rows, datasets, paper values)")
    scored_runs(s, "fig4a: ")
    s.add_argument("--logs", nargs="*", default=[], help="fig4b: LABEL=train_log.csv, one per run")
    s.add_argument("--out", required=True, help="output prefix, e.g. results/paper/figures/fig4a")
    s.set_defaults(func=cmd_figure)

    s = verb("claims", "check the paper's claims one by one against this run's numbers")
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
    s.set_defaults(func=cmd_claims)

    s = verb("plan", "jobs per rule, GPU-hours and disk of a configuration (before a run)")
    s.add_argument("--config", help="configuration file (default: ./config.yaml)")
    s.add_argument(
        "--configfile", nargs="*", default=[], help="presets merged over it, as for snakemake"
    )
    s.set_defaults(func=cmd_plan)

    s = verb(
        "costs",
        "measure each step's time and memory from a finished paper-scale smoke run",
    )
    s.add_argument(
        "action",
        choices=["show", "update"],
        help="show: print what the run measured; update: merge it into the cost file "
        "that `corereg plan` and resources set to auto use",
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
    s.set_defaults(func=cmd_costs)

    s = verb("example", "copy the demo's tables and figures to results/example, or check them")
    s.add_argument(
        "action",
        choices=["update", "check"],
        help="update: copy the demo's outputs; check: compare the committed tables",
    )
    s.add_argument("--demo", default="results/demo", help="the demo's results folder")
    s.add_argument("--example", default="results/example", help="the committed example folder")
    s.add_argument(
        "--dice-tolerance",
        type=float,
        default=2.0,
        help="allowed Dice difference in points (trained rows differ between CPUs)",
    )
    s.add_argument("--sdlogj-tolerance", type=float, default=0.02, help="allowed SDlogJ difference")
    s.add_argument(
        "--hd95-tolerance", type=float, default=5.0, help="allowed HD95 difference in mm"
    )
    s.set_defaults(func=cmd_example)

    s = verb("config-doc", "write docs/configuration.md from the configuration schema")
    s.add_argument("--root", default=".", help="the repository (holds workflow/schemas/)")
    s.add_argument("--out", default="docs/configuration.md", help="the page to write")
    s.set_defaults(func=cmd_config_doc)

    s = verb("report", "the reproduction report: one self-contained HTML page")
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
    s.set_defaults(func=cmd_report)
    return p


def _context(verb: str) -> str:
    """Where this step runs: host, scheduler job and the GPUs the scheduler granted."""
    import os
    import socket

    env = os.environ
    job = f", SLURM job {env['SLURM_JOB_ID']}" if env.get("SLURM_JOB_ID") else ""
    gpus = env.get("CUDA_VISIBLE_DEVICES", "<unset>")
    return f"[corereg {verb}] corereg {__version__} on {socket.gethostname()}{job}, CUDA_VISIBLE_DEVICES={gpus}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    if (
        args.verb != "plan"
    ):  # rule entry points: where the step ran (stdout; stderr keeps the one-line errors)
        print(_context(args.verb), flush=True)
    try:
        args.func(args)
    except CoreregError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"[corereg {args.verb}] done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
