"""Adapters of the Table 1 comparison methods: each produces the common Learn2Reg field."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def run_binary(tool: str, binary: Path, args: list[str], threads: int | None = None) -> str:
    """Run an external registration binary (OpenMP threads = the job's ``threads``); its
    stdout, or one CoreregError with the exit status and the last lines it printed."""
    from corereg.errors import CoreregError

    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise CoreregError(f"{tool} {Path(binary).name} failed (exit {proc.returncode}): {tail}")
    return proc.stdout
