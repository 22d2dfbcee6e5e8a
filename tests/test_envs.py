"""Conda environments: valid, pinned, and consistent with the pip lock file."""

import re

import yaml

from conftest import ROOT


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_lock_pins_the_user_chosen_packages():
    pins = lock()
    assert pins["torch"] == "2.13.0"  # no local +cpu tag: GPU machines get the CUDA build
    for pkg in ("snakemake", "nibabel", "pandas", "scipy", "matplotlib", "convexadam"):
        assert pkg in pins


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
            assert pins.get(key) == version, (
                f"{path}: {dep} disagrees with requirements.lock ({pins.get(key)})"
            )


def test_every_rule_env_exists():
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        for rel in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / rel).resolve().is_file(), f"{smk.name}: {rel}"
