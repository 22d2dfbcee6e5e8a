import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_snakemake(*args, timeout=900, check=True):
    """Run Snakemake from the repository root as a user would; return the CompletedProcess."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(BIN / "snakemake"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def run_cli(*args, env=None):
    """``python -m corereg ARGS`` from the repository root; ``env`` entries are added (a
    PYTHONPATH in it goes before the checkout's src/, e.g. for a shim package)."""
    extra = dict(env or {})
    path = [p for p in (extra.pop("PYTHONPATH", None), str(ROOT / "src")) if p]
    env = {**os.environ, **extra, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run(
        [sys.executable, "-m", "corereg", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One end-to-end Snakemake run of the tiny preset, shared by the workflow tests."""
    out = tmp_path_factory.mktemp("tiny")
    run_snakemake(
        "--profile",
        "profiles/demo",
        "--configfile",
        "workflow/presets/tiny.yaml",
        "--config",
        f"results={out}/results",
        f"data_root={out}/data",
    )
    return out
