"""Conda environments: valid, pinned, and consistent with the pip lock file."""

import os
import re

import yaml

from conftest import ROOT


def lock(name: str = "requirements.lock") -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_lock_pins_the_user_chosen_packages():
    pins = lock()
    assert pins["torch"] == "2.13.0"  # no local +cpu tag: GPU machines get the CUDA build
    for pkg in ("nibabel", "pandas", "scipy", "matplotlib", "convexadam"):
        assert pkg in pins
    assert lock("requirements-dev.lock")["snakemake"] == "9.27.1"


DEV_TOOLS = ("snakemake", "pytest", "ruff", "black", "snakefmt", "snakemake-interface-common")


def test_job_environments_are_lean():
    """Jobs carry what they import: no workflow engine, test or lint tool in the job lock
    or in any conda environment; the two locks pin disjoint sets."""
    jobs, dev = lock(), lock("requirements-dev.lock")
    assert not set(jobs) & set(dev)
    for tool in DEV_TOOLS:
        assert tool in dev and tool not in jobs, tool
    for path in sorted((ROOT / "envs").glob("*.yaml")):
        text = path.read_text().lower()
        for tool in DEV_TOOLS:
            assert f"- {tool}==" not in text, f"{path.name} carries {tool}"


def test_env_files_are_pinned_and_agree_with_the_lock():
    pins = lock()
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert envs
    for path in envs:
        env = yaml.safe_load(path.read_text())
        assert env["channels"] == ["conda-forge", "nodefaults"], path
        pip = []
        for dep in env["dependencies"]:
            if isinstance(dep, dict):
                pip += dep["pip"]
            else:
                assert re.fullmatch(r"[\w.-]+ =\d+(\.\d+)*", dep), (
                    f"{path}: unpinned conda dependency {dep}"
                )
        for dep in pip:
            assert re.fullmatch(r"[\w.-]+==[\w.+-]+", dep), f"{path}: unpinned pip dependency {dep}"
            name, version = dep.split("==")
            key = name.lower().replace("_", "-")
            if path.stem != "corereg":
                continue  # tool environments: test_tool_environments_agree_with_pyproject
            assert pins.get(key) == version, (
                f"{path}: {dep} disagrees with requirements.lock ({pins.get(key)})"
            )


def test_every_rule_env_exists():
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        for rel in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / rel).resolve().is_file(), f"{smk.name}: {rel}"


EXTRA_OF_ENV = {
    "totalseg_v1": "totalseg-v1",
    "totalseg_v2": "totalseg-v2",
    "registration_tools": "baselines",
    "unigradicon": "baselines",
}


def pyproject_pins(extra: str | None) -> dict[str, str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["optional-dependencies"][extra] if extra else project["dependencies"]
    pins = {}
    for dep in deps:
        if "==" in dep:
            name, version = dep.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_tool_environments_agree_with_pyproject():
    """Tool-family envs: every package pyproject.toml pins (dependencies or extras) has that
    version; the corereg stack (torch, nibabel, numpy) follows requirements.lock unless the
    env file's header says why not (TotalSegmentator 1.5.7 needs an older torch and numpy)."""
    lock_pins = {**lock(), **pyproject_pins(None)}
    names = {p.stem for p in (ROOT / "envs").glob("*.yaml")}
    assert names == {"corereg", *EXTRA_OF_ENV}
    for stem, extra in EXTRA_OF_ENV.items():
        path = ROOT / "envs" / f"{stem}.yaml"
        pins = pyproject_pins(extra)
        text = path.read_text()
        env = yaml.safe_load(text)
        pip = [d for dep in env["dependencies"] if isinstance(dep, dict) for d in dep["pip"]]
        for dep in pip:
            name, version = dep.split("==")
            key = name.lower().replace("_", "-")
            if key in pins:
                assert pins[key] == version, (
                    f"{path.name}: {dep} disagrees with extra {extra} ({pins[key]})"
                )
            elif key in lock_pins and lock_pins[key] != version:
                assert f"{name} is {version}" in text or f"{key} is {version}" in text.lower(), (
                    f"{path.name}: {dep} differs from requirements.lock ({lock_pins[key]}) without a reason"
                )


def test_slurm_plugin_is_installed_by_make():
    pins = lock("requirements-dev.lock")
    assert pins["snakemake-executor-plugin-slurm"] == "2.8.0"
    assert pins["snakemake-executor-plugin-slurm-jobstep"] == "0.6.1"


def test_method_envs_hold_the_corereg_stack_and_their_tools():
    """A register/train job runs `python -m corereg` in its method's env: every lock pin is
    there, and the post-deploy script installs the tools at the `baselines` extra's pins."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    pins, extra = lock(), pyproject_pins("baselines")
    envs = {m.get("env", "corereg") for m in config["methods"].values()}
    assert {"registration_tools", "unigradicon"} <= envs
    for stem in envs:
        env = yaml.safe_load((ROOT / "envs" / f"{stem}.yaml").read_text())
        pip = {
            d.split("==")[0].lower().replace("_", "-"): d.split("==")[1]
            for dep in env["dependencies"]
            if isinstance(dep, dict)
            for d in dep["pip"]
        }
        assert {k: pip.get(k) for k in pins} == pins, stem
        script = ROOT / "envs" / f"{stem}.post-deploy.sh"
        if stem != "corereg":
            text = script.read_text()
            assert os.access(script, os.X_OK) and "set -euo pipefail" in text
            for name, version in re.findall(r"([A-Za-z][\w.-]*)==([\w.+-]+)", text):
                assert extra[name.lower().replace("_", "-")] == version, (script.name, name)
    # the label rule's env follows the configured TotalSegmentator version
    from corereg.workflow.jobs import Plan

    plan = Plan(config)
    assert plan.stage_env("radchest", "label") == "envs/totalseg_v1.yaml"
    config["datasets"]["radchest"]["source"]["totalsegmentator"]["version"] = "2.18.0"
    assert Plan(config).stage_env("radchest", "label") == "envs/totalseg_v2.yaml"
