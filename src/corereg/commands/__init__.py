"""The ``corereg`` verbs that every run has (data, training, registration, scoring,
outputs, planning); each module lists its verbs as :class:`corereg.adapters.base.Verb`.
The verbs particular to a method kind or a source kind come from their adapters."""

from __future__ import annotations

import json
from pathlib import Path

from corereg.errors import CoreregError

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


def read_spec(value: str | None) -> dict:
    """A verb's JSON settings (``@FILE``: read from FILE); one line for a bad one."""
    if not value:
        return {}
    where = value[1:] if value.startswith("@") else "--spec/--params"
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
    except OSError as exc:
        raise CoreregError(f"{where}: cannot read the settings file ({exc.strerror})") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CoreregError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(spec, dict):
        raise CoreregError(
            f"{where}: the settings must be a JSON object, not {type(spec).__name__}"
        )
    return spec


def manifests(items) -> dict[str, str]:
    """DATASET=PATH arguments -> {dataset: prepared folder}."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise CoreregError(f"--manifests takes DATASET=PATH, not '{item}'")
        ds, path = item.split("=", 1)
        out[ds] = path
    return out


def config_options(s, presets_default=None, presets_help="presets merged over it") -> None:
    """--config and --configfile, as for snakemake."""
    s.add_argument("--config", help="configuration file (default: ./config.yaml)")
    s.add_argument("--configfile", nargs="*", default=presets_default or [], help=presets_help)


def dataset_folder(path) -> Path | None:
    """A prepared dataset given as its folder or its manifest.json: the folder."""
    if not path:
        return None
    path = Path(path)
    return path.parent if path.name == "manifest.json" or path.is_file() else path
