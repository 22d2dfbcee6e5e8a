"""Checks of a configuration's paths and lists that the schema cannot express."""

from __future__ import annotations

import re
from pathlib import Path

from corereg.errors import CoreregError

SAFE_PATH = re.compile(r"^[\w./~+@,:=%-]+$")  # what the rules may pass to a shell unquoted


def check_output_root(key: str, value: str) -> None:
    """``results`` and ``data_root``: a folder of its own, in a name the shell keeps whole."""
    if not SAFE_PATH.match(value):
        bad = sorted({c for c in value if not SAFE_PATH.match(c)})
        raise CoreregError(
            f"config: {key} '{value}' holds {bad}: give a path of letters, digits and "
            "./_-+@,:=~% (the rules pass it to a shell)"
        )
    here = Path.cwd().resolve()
    where = Path(value).expanduser().resolve()
    if where == here or where in here.parents:
        raise CoreregError(
            f"config: {key} '{value}' is the working folder or holds it: its steps would write "
            "among the pipeline's own files; give a folder below it, e.g. results/mine"
        )


def check_unique(where: str, items: list) -> None:
    twice = sorted({str(i) for i in items if items.count(i) > 1})
    if twice:
        raise CoreregError(f"config: {where}: {', '.join(twice)} listed twice; list each once")
