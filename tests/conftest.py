import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENGINE = yaml.safe_load((ROOT / "config.yaml").read_text())["engine"]


def engine_params(**over):
    """The engine constants of config.yaml with ``over`` merged in (nested keys key by key)."""
    from corereg.config import deep_merge
    from corereg.params import EngineParams

    return EngineParams.from_mapping(deep_merge(ENGINE, over))


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


def kill_after_checkpoints(code: str, saves: int, *args) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a new process that kills itself with SIGKILL right after the
    ``saves``-th training checkpoint is on disk (as a job that loses its node would)."""
    prelude = (
        "import os, signal\n"
        "from corereg.training import checkpoint as _ckpt\n"
        "_save, _count = _ckpt.Checkpoint.save, [0]\n"
        "def _save_then_die(self, *a, **k):\n"
        "    _save(self, *a, **k)\n"
        "    _count[0] += 1\n"
        f"    if _count[0] == {int(saves)}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "_ckpt.Checkpoint.save = _save_then_die\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", prelude + code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def one_line_error(proc, *fragments):
    """A refused command: exit status 1, one line "error: ..." holding each fragment."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr


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
