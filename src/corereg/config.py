"""Reading and checking a configuration: config.yaml merged with presets, validated
against the schema, with one line naming the key and the file for any problem."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

from corereg.errors import CoreregError

SCHEMA = Path(__file__).with_name("config.schema.yaml")
ENGINE_BLOCK = "engine"  # the configuration's block of engine constants


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``: dictionaries key by key, the rest replaced."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = (
            deep_merge(out[k], v)
            if isinstance(v, dict) and isinstance(out.get(k), dict)
            else copy.deepcopy(v)
        )
    return out


@functools.cache
def schema() -> dict:
    """The configuration schema, read once per process (callers must not change it)."""
    return yaml.safe_load(SCHEMA.read_text())


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (the last would silently win)."""


def _no_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise CoreregError(
                f"{loader.name}: line {key_node.start_mark.line + 1}: key '{key}' is given twice "
                f"(first on line {seen[key] + 1}); keep one"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def read_yaml(path) -> dict:
    """A configuration file: a mapping, without a key given twice (one line otherwise)."""
    path = Path(path)
    try:
        loader = _StrictLoader(path.read_text())
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except (OSError, yaml.YAMLError) as exc:
        raise CoreregError(f"{path}: not a readable YAML file ({exc.__class__.__name__})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CoreregError(
            f"{path}: a configuration file holds settings by key, not a {type(data).__name__}"
        )
    return data


def check(config: dict, files=()) -> None:
    """Raise one CoreregError naming the first invalid key, its problem and the files (each
    file read again strictly: a key given twice is refused)."""
    from jsonschema import Draft202012Validator

    for f in files:
        if Path(f).is_file():
            read_yaml(f)

    e = first_error(Draft202012Validator(schema()), config)
    if e is not None:
        where = " + ".join(str(f) for f in files) or "configuration"
        key = ".".join(map(str, e.path)) or "<top level>"
        message = e.message if len(e.message) <= 300 else e.message[:300] + " ..."
        raise CoreregError(f"{where}: {key}: {message}")


def with_defaults(config: dict) -> dict:
    """A copy of ``config`` with the schema's defaults filled in where a key is absent, as
    Snakemake's ``validate`` fills them (objects' ``properties``, ``additionalProperties``,
    ``items``, ``$ref`` and ``allOf``); method kinds' parameter defaults are filled by
    :func:`method_params` instead."""
    out = copy.deepcopy(config)
    _fill(schema(), out)
    return out


def _fill(node: dict, value) -> None:
    if "$ref" in node:
        _fill(schema()["$defs"][node["$ref"].rsplit("/", 1)[-1]], value)
    for sub in node.get("allOf", []):
        _fill(sub, value)
    if isinstance(value, dict):
        for key, sub in (node.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _fill(sub, value[key])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key in set(value) - set(node.get("properties") or {}):
                _fill(extra, value[key])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            _fill(node["items"], item)


def first_error(validator, instance):
    """The validation error of ``instance`` at the first key path in order, or None."""
    return min(validator.iter_errors(instance), key=lambda e: list(e.path), default=None)


def node_error(node: dict, values):
    """The first validation error of ``values`` against one node of the schema, or None."""
    from jsonschema import Draft202012Validator

    return first_error(Draft202012Validator({**node, "$defs": schema()["$defs"]}), values)


def engine_overrides_node() -> dict:
    """The schema of an engine method's ``params`` and variants: the engine block's keys,
    all optional (config.yaml's block is complete; overrides name some keys only)."""
    return {k: v for k, v in schema()["properties"]["engine"].items() if k != "required"}


# Schema nodes that method kinds' adapters declare themselves (corereg.adapters), by kind.
ADAPTER_NODES: dict[str, dict] = {}


def method_params_schema(kind: str) -> dict:
    """The schema of ``methods.<name>.params`` for a method kind: the schema's node (the
    engine's are overrides of the engine block), or the one its adapter declares."""
    if kind == "engine":
        return engine_overrides_node()
    if kind in ADAPTER_NODES:
        return ADAPTER_NODES[kind]
    kinds = schema()["$defs"]["method_params"]
    if kind not in kinds:
        raise CoreregError(f"unknown method kind '{kind}'; known: {', '.join(kinds)}")
    return kinds[kind]


def _defaults(node: dict) -> dict:
    out = {}
    for key, sub in (node.get("properties") or {}).items():
        if "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        elif sub.get("type") == "object" and sub.get("properties"):
            out[key] = _defaults(sub)
    return out


def method_defaults(kind: str) -> dict:
    """Every parameter of a method kind that has a default, with it (nested objects too)."""
    return _defaults(method_params_schema(kind))


def check_method_params(kind: str, params: dict, where: str) -> None:
    """Raise one CoreregError naming the first unknown or invalid parameter of ``params``
    (all keys optional) as ``<where>.<key>: <problem>``."""
    check_node_params(kind, method_params_schema(kind), params, where)


def check_node_params(kind: str, node: dict, params: dict, where: str) -> None:
    """:func:`check_method_params` against a given schema node (a kind's own)."""
    e = node_error(node, params or {})
    if e is None:
        return
    path = ".".join([where, *map(str, e.path)])
    if e.validator == "additionalProperties":
        sub = e.schema.get("properties", {})
        unknown = sorted(set(e.instance) - set(sub))
        known = f"known: {list(sub)}" if len(sub) <= 12 else "see docs/configuration.md"
        raise CoreregError(f"{path}: unknown parameters {unknown} of method kind '{kind}'; {known}")
    raise CoreregError(f"{path}: {e.message}")


def method_params(kind: str, params: dict | None, where: str | None = None) -> dict:
    """A method's parameters checked against its kind's schema, with the defaults filled in."""
    check_method_params(kind, params or {}, where or f"{kind} params")
    return deep_merge(method_defaults(kind), params or {})


def load(config=None, presets=()) -> dict:
    """``config`` (default ./config.yaml) with ``presets`` merged over it, checked."""
    files = [Path(config or "config.yaml"), *map(Path, presets or [])]
    merged: dict = {}
    for f in files:
        if not f.is_file():
            hint = "; give --config PATH (the repository's config.yaml)" if f == files[0] else ""
            if f != files[0] and f.suffix not in (".yaml", ".yml", ".json"):
                hint = "; a target? name targets before --configfile (as for snakemake)"
            raise CoreregError(f"{f}: configuration file does not exist{hint}")
        merged = deep_merge(merged, read_yaml(f))
    check(merged, files)
    return merged


# Environment that makes PyTorch's CPU kernels (ATen), oneDNN convolutions and MKL use one
# instruction set whatever the CPU offers, so that CPUs of different generations compute
# the same numbers (measured here: about 30 % slower training on an AVX-512 machine).
CPU_ISA_ENV = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
}


def cpu_isa_env(name: str) -> dict[str, str]:
    """Environment variables of the ``cpu_isa`` setting (set before torch is imported)."""
    if name not in CPU_ISA_ENV:
        raise CoreregError(f"cpu_isa must be one of {list(CPU_ISA_ENV)}, not '{name}'")
    return dict(CPU_ISA_ENV[name])


TRAINING_DATA_ENV = "COREREG_TRAINING_DATA"


def training_data_env(cfg: dict) -> dict[str, str]:
    """The environment that hands a configuration's ``training_data`` block (defaults
    filled) to the workflow's train jobs.  Not a rule parameter: where the scans live
    changes no number, so changing it must rerun nothing."""
    import json

    return {TRAINING_DATA_ENV: json.dumps(cfg["training_data"], sort_keys=True)}
