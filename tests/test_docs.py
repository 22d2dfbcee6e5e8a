"""The documentation: the configuration reference follows the schema."""

from conftest import ROOT
from corereg.config_doc import load_schema, render


def test_configuration_page_is_generated_from_the_schema():
    page, missing = render(load_schema(ROOT))
    assert missing == [], f"schema properties without a description: {missing}"
    assert (ROOT / "docs" / "configuration.md").read_text() == page, (
        "docs/configuration.md differs from the schema: run `python -m corereg config-doc`"
    )


def test_a_missing_description_is_reported():
    schema = load_schema(ROOT)
    del schema["properties"]["engine"]["properties"]["stages"]["description"]
    _, missing = render(schema)
    assert missing == ["engine.stages"]


USER_FACING = (
    "README.md",
    "config.yaml",
    "Snakefile",
    "Makefile",
    "docs",
    "workflow",
    "src",
    "envs",
    "profiles",
    "results/README.md",
    "benchmarks",
    "CITATION.cff",
)


def user_facing_files():
    for name in USER_FACING:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            if (
                f.suffix in {".png", ".pdf", ".pt", ".gz", ".pyc"}
                or "__pycache__" in f.parts
                or any(p.endswith(".egg-info") for p in f.parts)
            ):
                continue
            yield f


def test_nothing_points_to_files_outside_the_repository_or_to_its_development():
    import re

    # names of design notes that exist only outside the repository (spelt in pieces here so
    # that this test does not itself name them)
    notes = [
        "ALGORITHM" + r"\.md",
        "DATA" + r"\.md",
        "PAPER" + "_RESULTS",
        "SLURM_AND" + "_SNAKEMAKE",
    ]
    outside = re.compile("|".join([*notes, r"notes/", r"\.\./shared"]))
    process = re.compile(
        r"\b(later |this |the )?issues?\b|\b(this|a|the|development) session\b", re.I
    )
    problems = []
    for f in user_facing_files():
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if outside.search(line) or process.search(line):
                problems.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert problems == []


def test_every_docs_page_and_link_named_exists():
    import re

    named = re.compile(r"\bdocs/[A-Za-z_]+\.md\b")
    link = re.compile(r"\]\(([^)#:]+)(#[^)]*)?\)")
    missing = []
    for f in user_facing_files():
        text = f.read_text(errors="replace")
        for m in named.finditer(text):
            if not (ROOT / m.group(0)).is_file():
                missing.append(f"{f.relative_to(ROOT)} names {m.group(0)}")
        if f.suffix == ".md":
            for m in link.finditer(text):
                if not (f.parent / m.group(1)).exists():
                    missing.append(f"{f.relative_to(ROOT)} links {m.group(1)}")
    assert missing == []


def test_every_verb_and_option_has_help_text():
    import subprocess
    import sys

    from corereg.adapters import METHOD_KINDS as KINDS
    from corereg.cli import build_parser

    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert len(verbs) >= 15
    for name, sub in verbs.items():
        assert sub.description, name
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"corereg {name} {action.option_strings or action.dest}"
        out = subprocess.run(
            [sys.executable, "-m", "corereg", name, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0 and "``" not in out.stdout and ":func:" not in out.stdout
    top = subprocess.run(
        [sys.executable, "-m", "corereg", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    assert "``" not in top and all(v in top for v in verbs)
    register = verbs["register"].format_help()
    assert all(kind in register for kind in KINDS)


def test_plan_runs_outside_the_checkout_and_the_wheel_carries_the_schema(tmp_path):
    import subprocess
    import sys
    import zipfile

    env_cwd = tmp_path / "elsewhere"
    env_cwd.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "corereg", "plan", "--config", str(ROOT / "config.yaml")],
        cwd=env_cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and "corereg plan:" in out.stdout, out.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "corereg", "plan"],
        cwd=env_cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 1 and "give --config PATH" in missing.stderr
    import shutil

    tree = tmp_path / "tree"  # a copy: building writes build/ beside the sources
    tree.mkdir()
    for part in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / part, tree / part)
    shutil.copytree(
        ROOT / "src",
        tree / "src",
        symlinks=True,
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"),
    )
    shutil.copytree(ROOT / "workflow" / "schemas", tree / "workflow" / "schemas")
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
            str(tree),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = wheel_dir.glob("corereg-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        schema = zf.read("corereg/config.schema.yaml").decode()
    assert schema == (ROOT / "workflow/schemas/config.schema.yaml").read_text()


def test_the_readmes_numbers_are_those_the_pipeline_writes():
    """The README's example table, demo job count and compute table come from
    results/example and `corereg plan`; `corereg example readme` rewrites them."""
    from corereg.workflow import readme

    text = (ROOT / "README.md").read_text()
    assert readme.render(text, readme.blocks(ROOT)) == text, (
        "README.md's generated numbers are stale: run `corereg example readme`"
    )
    assert "| train | 78 |" in text and "The demo is " in text


def test_doctor_says_what_is_missing_in_one_line_each(tmp_path):
    import yaml

    from conftest import run_cli

    ok = run_cli("doctor", "--configfile", "workflow/presets/demo.yaml")
    assert ok.returncode == 0 and "[doctor] nothing missing" in ok.stdout, ok.stdout + ok.stderr
    mine = tmp_path / "mine.yaml"
    entry = {
        "display": "Mine",
        "shape": [32, 32, 32],
        "spacing": [2.0, 2.0, 2.0],
        "eval_labels": [1],
        "source": {
            "kind": "folder",
            "path": str(tmp_path / "absent"),
            "images": "{id}.nii.gz",
            "labels": "l/{id}.nii.gz",
        },
    }
    mine.write_text(
        yaml.safe_dump(
            {"datasets": {"mine": entry}, "artifacts": {"table1": {"datasets": ["mine"]}}}
        )
    )
    bad = run_cli("doctor", "table1", "--configfile", "workflow/presets/demo.yaml", str(mine))
    assert bad.returncode == 1
    assert f"[doctor] mine: source.path {tmp_path / 'absent'}: no such folder" in bad.stdout
