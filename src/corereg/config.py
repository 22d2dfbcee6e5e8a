"""Reading and checking a configuration: config.yaml merged with presets, validated
against the schema, with one line naming the key and the file for any problem."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from corereg.errors import CoreregError

SCHEMA = Path(__file__).with_name("config.schema.yaml")


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


def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def check(config: dict, files=()) -> None:
    """Raise one CoreregError naming the first invalid key, its problem and the files."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema()).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = " + ".join(str(f) for f in files) or "configuration"
        key = ".".join(map(str, e.path)) or "<top level>"
        message = e.message if len(e.message) <= 300 else e.message[:300] + " ..."
        raise CoreregError(f"{where}: {key}: {message}")


def load(config=None, presets=()) -> dict:
    """``config`` (default ./config.yaml) with ``presets`` merged over it, checked."""
    files = [Path(config or "config.yaml"), *map(Path, presets or [])]
    merged: dict = {}
    for f in files:
        if not f.is_file():
            hint = "; give --config PATH (the repository's config.yaml)" if f == files[0] else ""
            raise CoreregError(f"{f}: configuration file does not exist{hint}")
        try:
            merged = deep_merge(merged, yaml.safe_load(f.read_text()) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise CoreregError(f"{f}: not a readable YAML file ({exc.__class__.__name__})") from exc
    check(merged, files)
    return merged
