"""Run verbs: ``train``, ``register``, ``keep-field`` and ``evaluate`` of one run; the
method kind's adapter (:data:`corereg.adapters.METHOD_KINDS`) trains and registers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from corereg import __version__, not_run
from corereg.adapters.base import Verb
from corereg.commands import (
    DEVICE_HELP,
    IF_MISSING_HELP,
    SPEC_HELP,
    THREADS_HELP,
    dataset_folder,
    read_spec,
)
from corereg.errors import CoreregError, ToolMissing


def train(a) -> None:
    from corereg.adapters import METHOD_KINDS
    from corereg.data.manifest import load_manifest
    from corereg.device import resolve_device, set_threads
    from corereg.io import check_outputs
    from corereg.training.checkpoint import OTHER_DATA_ENV

    check_outputs({"--out": a.out}, {"--data": dataset_folder(a.data)})
    if a.other_data_checkpoint:
        os.environ[OTHER_DATA_ENV] = a.other_data_checkpoint
    spec = read_spec(a.spec)
    if "kind" not in spec:
        raise CoreregError("--spec: the train job's settings name no method 'kind'")
    kind = METHOD_KINDS[spec["kind"]]
    kind.check_trainable()
    set_threads(a.threads)
    placement = _placement(a)
    try:
        final = kind.train(load_manifest(a.data), spec, resolve_device(a.device), a.out, placement)
    except ToolMissing as exc:
        if a.if_missing != "report":
            raise
        final = not_run.write_model(a.out, spec.get("kind"), exc.reason)
    print(f"[train] wrote {final}")


def register(a) -> None:
    from corereg.adapters import METHOD_KINDS
    from corereg.data.manifest import load_manifest
    from corereg.device import describe, resolve_device, set_threads
    from corereg.errors import InputError
    from corereg.io import (
        FIELDS,
        atomic_dir,
        check_nifti_name,
        check_outputs,
        check_replaceable,
        load_image,
        save_field,
        write_csv,
        write_json,
    )
    from corereg.measure import peak_memory
    from corereg.registration import check_field, check_pair, register_manifest, timed_register

    set_threads(a.threads)
    device = resolve_device(a.device)
    params = read_spec(a.params)
    if a.manifest and not a.out_dir:
        raise CoreregError("--manifest needs --out-dir")
    if a.manifest:  # nothing is written over or into an input, before any work
        check_outputs(
            {"--out-dir": a.out_dir},
            {"--manifest": dataset_folder(a.manifest), "--checkpoint": a.checkpoint},
        )
        check_replaceable(a.out_dir, FIELDS)
    elif a.out:
        if Path(a.out).is_dir():
            raise InputError(
                a.out, "is a folder; give the field's file name, e.g. disp_0001_0002.nii.gz"
            )
        check_nifti_name(a.out)
        check_outputs(
            {"--out": a.out},
            {"--fixed": a.fixed, "--moving": a.moving, "--checkpoint": a.checkpoint},
        )
    try:
        method = METHOD_KINDS[a.method].make(params, device, a.checkpoint, a.seed)
    except ToolMissing as exc:
        if a.if_missing != "report" or not a.manifest:
            raise
        not_run.write_fields(a.out_dir, a.method, exc.reason)
        return
    if a.manifest:
        manifest = load_manifest(a.manifest)
        with atomic_dir(a.out_dir, FIELDS) as tmp:
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
    fixed, affine = load_image(a.fixed)
    moving, moving_affine = load_image(a.moving)
    check_pair(a.fixed, fixed, a.moving, moving, affine, moving_affine)
    disp, secs = timed_register(method, fixed, moving)
    check_field(f"{a.method}, pair {a.fixed} <- {a.moving}", disp, fixed.shape)
    save_field(a.out, disp, affine, a.field_storage)
    print(json.dumps({"out": a.out, "seconds": round(secs, 4), "device": describe(device)}))


def keep_field(a) -> None:
    import shutil

    from corereg.data.manifest import field_name, load_manifest
    from corereg.errors import InputError
    from corereg.io import FIGURE_FIELDS, atomic_dir, check_outputs

    check_outputs(
        {"--out-dir": a.out_dir}, {"--fields": a.fields, "--manifest": dataset_folder(a.manifest)}
    )
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
    with atomic_dir(a.out_dir, FIGURE_FIELDS) as tmp:
        for f in (record, src / name):
            if f.is_file():
                shutil.copyfile(f, tmp / f.name)


def export_l2r(a) -> None:
    from corereg.data import learn2reg
    from corereg.data.manifest import load_manifest
    from corereg.errors import InputError
    from corereg.io import check_outputs

    check_outputs(
        {"--out-dir": a.out_dir}, {"--fields": a.fields, "--manifest": dataset_folder(a.manifest)}
    )
    if not_run.reason_of_fields(Path(a.fields)) is not None:
        raise InputError(a.fields, "the method did not run (its fields are a not-run record)")
    names = learn2reg.export(load_manifest(a.manifest), Path(a.fields), Path(a.out_dir), a.format)
    print(f"[export-l2r] wrote {len(names)} fields to {a.out_dir}")


def _export_options(s) -> None:
    s.add_argument("--manifest", required=True, help="prepared dataset (folder or manifest.json)")
    s.add_argument("--fields", required=True, help="a run's folder of fields (register step)")
    s.add_argument(
        "--format",
        choices=["nii.gz", "npz"],
        default="nii.gz",
        help="nii.gz: float32 NIfTI; npz: float16 array arr_0 (half the size)",
    )
    s.add_argument("--out-dir", required=True, help="submission folder: disp_FFFF_MMMM_FFFF_MMMM.*")


def evaluate(a) -> None:
    from corereg.data.manifest import load_manifest
    from corereg.evaluation_run import evaluate_run
    from corereg.io import check_outputs

    check_outputs(
        {"--out-structures": a.out_structures, "--out-pairs": a.out_pairs},
        {"--manifest": dataset_folder(a.manifest), "--fields": a.fields},
    )

    spec = read_spec(a.spec)
    evaluate_run(load_manifest(a.manifest), Path(a.fields), spec, a.out_structures, a.out_pairs)


def _train_options(s) -> None:
    s.add_argument("--data", required=True, help="prepared dataset folder")
    s.add_argument("--method", required=True, help="the method's key in the configuration (logs)")
    s.add_argument("--variant", default="default", help="the variant's key (logs)")
    s.add_argument("--seed", type=int, default=0, help="training seed")
    s.add_argument("--spec", required=True, help=SPEC_HELP + " (kind, params, dataset entry, seed)")
    s.add_argument("--device", default="auto", help=DEVICE_HELP)
    s.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    s.add_argument("--out", required=True, help="model folder (final.pt, train_log.csv)")
    s.add_argument("--if-missing", choices=["report", "fail"], default="fail", help=IF_MISSING_HELP)
    s.add_argument(
        "--other-data-checkpoint",
        choices=["fail", "restart"],
        default=None,
        help="a checkpoint.pt in --out written on other training data: stop (fail, the default) "
        "or remove it and start over (restart, what the workflow's jobs do)",
    )
    s.add_argument(
        "--data-on-device",
        type=_on_device,
        default=None,
        metavar="{auto,true,false}",
        help="true: keep every training scan on the device; false: read each batch's scans "
        "from the scan cache (the next batch in the background); auto (default): true on a "
        "GPU where they fit in --device-share of its free memory.  Unset, these three options "
        "take the workflow's training_data settings (COREREG_TRAINING_DATA)",
    )
    s.add_argument(
        "--device-share",
        type=float,
        default=None,
        help="with --data-on-device auto, the share of free GPU memory the scans may take (0.5)",
    )
    s.add_argument(
        "--cache-dir",
        default=None,
        help="folder of the uncompressed scan cache; environment variables such as $TMPDIR "
        "are expanded (default: a folder 'cache' beside the prepared dataset)",
    )


def _placement(a):
    """The options given, else the workflow's training_data settings (environment), else
    the defaults."""
    import json

    from corereg.config import TRAINING_DATA_ENV
    from corereg.training.batches import DataPlacement

    try:
        workflow = json.loads(os.environ.get(TRAINING_DATA_ENV) or "{}")
    except json.JSONDecodeError:
        raise CoreregError(f"{TRAINING_DATA_ENV} is not valid JSON") from None
    on = a.data_on_device if a.data_on_device is not None else workflow.get("on_device", "auto")
    share = a.device_share if a.device_share is not None else workflow.get("device_share", 0.5)
    cache = a.cache_dir if a.cache_dir is not None else workflow.get("cache_dir", "")
    return DataPlacement(on, float(share), cache)


def _on_device(text: str):
    import argparse

    choice = {"auto": "auto", "true": True, "false": False}.get(text.lower())
    if choice is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, true or false")
    return choice


def _register_options(s) -> None:
    s.add_argument(
        "--method", required=True, metavar="KIND", help=f"method kind: {', '.join(_kinds())}"
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


def _keep_field_options(s) -> None:
    s.add_argument("--fields", required=True, help="the register step's folder")
    s.add_argument("--manifest", required=True, help="prepared dataset folder or manifest.json")
    s.add_argument(
        "--pair-index", type=int, required=True, help="position in the manifest's test pairs"
    )
    s.add_argument("--out-dir", required=True, help="folder for the copied field")


def _evaluate_options(s) -> None:
    s.add_argument("--manifest", required=True, help="prepared dataset folder or manifest.json")
    s.add_argument("--fields", required=True, help="the register step's folder")
    s.add_argument(
        "--spec",
        required=True,
        help=SPEC_HELP + " (dataset, method, variant, seed, evaluated labels)",
    )
    s.add_argument("--out-structures", required=True, help="per pair and structure CSV")
    s.add_argument("--out-pairs", required=True, help="per pair CSV")


def verbs() -> list[Verb]:
    return [
        Verb(
            "train",
            "train a learning-based method (CoRe, Bigalke et al., VoxelMorph, LapIRN)",
            _train_options,
            train,
        ),
        Verb(
            "register",
            "register one pair (--fixed, --moving, --out) or every pair of a split",
            _register_options,
            register,
        ),
        Verb(
            "keep-field",
            "copy the field of one test pair out of a run's fields (for figures)",
            _keep_field_options,
            keep_field,
        ),
        Verb(
            "export-l2r",
            "write a run's fields under the names and in the format Learn2Reg's evaluation reads",
            _export_options,
            export_l2r,
        ),
        Verb(
            "evaluate",
            "Dice, HD95, SDlogJ and folding of a folder of fields",
            _evaluate_options,
            evaluate,
        ),
    ]


def _kinds():
    from corereg.adapters import METHOD_KINDS

    return list(METHOD_KINDS)
