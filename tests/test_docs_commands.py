"""Every `snakemake` and `corereg plan` command that README.md and docs/ show runs as
written: each is taken from the pages themselves and dry-run (`-n`) from the repository
root, so a target that does not exist, an option in the wrong place or a file the pages
name but the repository lacks fails here.

Only what this machine cannot do is changed, and said so: `--use-conda` is left out (no
conda channel can be reached from the test machines) and the SLURM profile runs from a copy
with `use-conda: false`; placeholders the pages ask the reader to fill (`mine.yaml`,
`my_ablation.yaml`, `YOUR_PARTITION`) are filled with the examples the pages name.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from conftest import BIN, ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "results/README.md"]
# commands a dry run cannot stand for: a report of outputs that exist only after a run
NOT_DRY = ("--report", "...")


def _commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
        lines = [ln for b in blocks for ln in b.splitlines()]
        lines += re.findall(r"`((?:snakemake|corereg plan)\b[^`]*)`", text)
        lines += [
            m.split(": ", 1)[1] for m in re.findall(r"# [\w.]+\.yaml: snakemake [^\n]+", text)
        ]
        for line in lines:
            cmd = line.split("  #")[0].split(" # ")[0].strip()
            if re.match(r"(snakemake|corereg plan)(\s|$)", cmd) and not any(
                x in cmd for x in NOT_DRY
            ):
                found.append((page.relative_to(ROOT).as_posix(), cmd))
    first = {}  # each command once, with the first page that shows it
    for page, cmd in found:
        first.setdefault(cmd, page)
    return [(page, cmd) for cmd, page in first.items()]


COMMANDS = _commands()


def test_the_pages_show_the_commands_this_test_runs():
    shown = {c for _, c in COMMANDS}
    assert "snakemake --cores 8 --use-conda" in shown
    assert "snakemake --profile profiles/slurm" in shown
    assert any(c.startswith("snakemake table2") for c in shown)
    assert any("table4" in c for c in shown) and any("mine.yaml" in c for c in shown)
    assert len(shown) >= 12, shown


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """The files the pages ask the reader to write, as the pages say to write them."""
    tmp = tmp_path_factory.mktemp("pages")
    shutil.copy(ROOT / "workflow/presets/examples/folder.yaml", tmp / "mine.yaml")
    results = (ROOT / "docs/results.md").read_text()
    ablation = re.search(r"```yaml\n(# my_ablation\.yaml.*?)```", results, re.S)
    assert ablation, "docs/results.md lost its my_ablation.yaml example"
    (tmp / "my_ablation.yaml").write_text(ablation.group(1))
    profile = tmp / "slurm"
    profile.mkdir()
    cfg = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    cfg["use-conda"] = False
    (profile / "config.yaml").write_text(yaml.safe_dump(cfg))
    return tmp


def _as_run_here(cmd: str, tmp) -> list[str]:
    args = []
    for a in shlex.split(cmd):
        if a == "--use-conda":
            continue
        if a in ("mine.yaml", "my_ablation.yaml"):
            a = str(tmp / a)
        a = a.replace("YOUR_PARTITION", "debug")
        if a == "TARGET":
            a = "table2"
        args.append(a)
    args = [str(tmp / "slurm") if a == "profiles/slurm" else a for a in args]
    return args


@pytest.mark.slow
@pytest.mark.parametrize("page, cmd", COMMANDS, ids=[c for _, c in COMMANDS])
def test_a_command_of_the_pages_runs_as_written(page, cmd, stand_ins):
    args = _as_run_here(cmd, stand_ins)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if args[0] == "snakemake":
        args = [str(BIN / "snakemake"), *args[1:]]
        if "-n" not in args:
            args.append("-n")
    else:
        args = [str(BIN / "corereg"), *args[1:]]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{page}: `{cmd}` failed:\n{out[-3000:]}"
    if args[0].endswith("snakemake"):
        assert re.search(r"^total\s+\d+", out, re.M) or "Nothing to be done" in out, out[-2000:]
    else:
        assert re.match(r"corereg plan: \d+ jobs", proc.stdout), proc.stdout[:500]


def test_use_conda_without_conda_is_one_line_saying_what_to_do():
    path = os.pathsep.join([str(BIN), "/usr/bin", "/bin"])
    if shutil.which("conda", path=path):
        pytest.skip("conda is installed in a system folder here; the message cannot be seen")
    proc = subprocess.run(
        [str(BIN / "snakemake"), "table2", "--cores", "1", "--use-conda", "-n"],
        cwd=ROOT,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "--use-conda needs conda on PATH" in out and "leave out --use-conda" in out, out
    assert "Error running conda info" not in out, out
