"""The three registries (method kinds, dataset source kinds, artifact types): the plan and
the CLI dispatch through them only, and a new kind is one module plus one registry line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from conftest import ROOT
from corereg.adapters import ARTIFACT_TYPES, METHOD_KINDS, SOURCE_KINDS
from corereg.adapters.base import ArtifactType, MethodKind, SourceKind
from corereg.errors import CoreregError
from corereg.workflow.jobs import Plan

KIND_DISPATCH = re.compile(r'kind *(==|!=|in) |"(engine|deeds|unigradicon|core)"')


def _dispatch_lines() -> list[str]:
    files = [ROOT / "src/corereg/cli.py", *(ROOT / "src/corereg/workflow").rglob("*.py")]
    files += [*(ROOT / "src/corereg/commands").rglob("*.py")]
    return [
        f"{f.relative_to(ROOT)}:{i}: {line.strip()}"
        for f in files
        for i, line in enumerate(f.read_text().splitlines(), start=1)
        if KIND_DISPATCH.search(line)
    ]


def test_no_kind_dispatch_outside_the_adapters():
    assert _dispatch_lines() == []
    assert len((ROOT / "src/corereg/workflow/jobs.py").read_text().splitlines()) < 350
    assert len((ROOT / "src/corereg/cli.py").read_text().splitlines()) < 350


def test_the_dispatch_check_finds_a_kind_test(tmp_path):
    """The pattern above catches what it is meant to catch (so the check can fail)."""
    assert KIND_DISPATCH.search('if m["kind"] == "engine":')
    assert KIND_DISPATCH.search("if kind in LEARNED:")
    assert KIND_DISPATCH.search('    if "core" in self.cfg["methods"]:')
    assert not KIND_DISPATCH.search("return self.kind(name).assets(self, name)")


def test_every_registered_kind_is_complete_and_documented():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    page = (ROOT / "docs/configuration.md").read_text()
    for name in METHOD_KINDS:
        kind = METHOD_KINDS[name]
        assert isinstance(kind, MethodKind) and kind.name == name
        assert f"| `{name}` |" in page, name
        assert isinstance(kind.schema_node(), dict)
        if kind.method is not None:
            assert kind.method_class().kind == name
        else:
            assert kind.missing
    assert sorted(schema["$defs"]["method_params"]) == sorted(METHOD_KINDS)
    for name in SOURCE_KINDS:
        assert isinstance(SOURCE_KINDS[name], SourceKind) and f"| `{name}` |" in page, name
    for name in ARTIFACT_TYPES:
        assert isinstance(ARTIFACT_TYPES[name], ArtifactType) and f"| `{name}` |" in page, name
    with pytest.raises(CoreregError, match="unknown method kind 'nope'; known: initial"):
        METHOD_KINDS["nope"]


def test_an_unknown_kind_or_type_is_one_line():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["methods"]["niftyreg"]["kind"] = "niftyrge"
    with pytest.raises(CoreregError, match=r"methods\.niftyreg\.kind: unknown method kind"):
        Plan(cfg)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["datasets"]["abdomen"]["source"]["kind"] = "zip"
    with pytest.raises(CoreregError, match=r"datasets\.abdomen\.source\.kind: unknown dataset"):
        Plan(cfg)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["artifacts"]["fig3"]["type"] = "picture"
    with pytest.raises(CoreregError, match=r"artifacts\.fig3\.type: unknown artifact type"):
        Plan(cfg)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    del cfg["datasets"]["abdomen"]["source"]["url"]
    cfg["datasets"]["abdomen"]["source"] = {"kind": "synthetic_abdomen", "seed": 1, "n_test": 3}
    with pytest.raises(CoreregError, match="kind synthetic_abdomen needs n_train"):
        Plan(cfg)


def test_paper_facts_come_from_the_configuration():
    """Pair counts from the real datasets' sources, T_inf from the table rows."""
    plan = Plan(yaml.safe_load((ROOT / "config.yaml").read_text()))
    assert plan.paper_counts("abdomen") == {"train pairs": 190, "test pairs": 45}
    assert plan.paper_counts("radchest") == {"train pairs": 300, "test pairs": 71}
    assert plan.paper_t_inf("abdomen")["engine"] == 1.2
    assert plan.paper_t_inf("radchest") == {
        "deeds": 45.0,
        "niftyreg": 85.5,
        "voxelmorph": 0.3,
        "lapirn": 0.8,
        "unigradicon": 45.6,
        "samconvex": 6.4,
        "engine": 1.9,
    }
    assert plan.counts("abdomen").train_scans == 20 and plan.counts("radchest").scans == 742


def test_the_contrastive_note_follows_the_method_not_its_key():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    spec = Plan(cfg).artifact_spec("table1")["cl"]
    cfg["methods"]["mine"] = cfg["methods"].pop("core")
    for art in cfg["artifacts"].values():
        for row in [*art["rows"], art.get("reference") or {}]:
            if row.get("method") == "core":
                row["method"] = "mine"
    assert Plan(cfg).artifact_spec("table1")["cl"] == spec


# ----------------------------------------------------------------------------- a toy kind
TOY_MODULE = '''
"""A toy method kind and a toy source kind (written by tests/test_adapters.py)."""
from corereg.adapters.base import Counts, MethodKind, SourceKind


class Toy(MethodKind):
    name = "toy"
    method = "corereg.registration.methods:Initial"

    def schema_node(self):
        return {"type": "object", "additionalProperties": False,
                "properties": {"strength": {"type": "number", "minimum": 0}}}

    def make(self, params, device, checkpoint=None, seed=0, dataset=None):
        return super().make({}, device, checkpoint, seed, dataset)


class ToySource(SourceKind):
    name = "toy_source"
    required = ("seed", "n_train", "n_test")
    synthetic = True

    def counts(self, source):
        return Counts(source.n_train + source.n_test, 0, source.n_test * (source.n_test - 1) // 2, 0)

    def prepare(self, args, spec, source):
        from corereg.data.synthetic import generate_abdomen

        generate_abdomen(args.out, args.dataset, spec["shape"], spec["spacing"], 2, source.n_test,
                         source.seed)
'''

TOY_CONFIG = """
results: results/toy
data_root: results/toy/data
device: cpu
seeds: [0]
datasets:
  toyset:
    display: Toy set
    shape: [24, 24, 24]
    spacing: [8.0, 8.0, 8.0]
    eval_labels: [1, 2, 3]
    source: {kind: toy_source, seed: 4, n_train: 2, n_test: 3}
methods:
  toy: {label: Toy, kind: toy, params: {strength: 1.5}}
artifacts:
  table1: {datasets: [toyset], rows: [{method: initial}, {method: toy}], reference: {method: toy}}
  table2: {datasets: [toyset], rows: [{method: toy}]}
  table3: {datasets: [toyset], rows: [{method: toy}]}
  fig4a: {datasets: [toyset], rows: [{method: core, variant: alpha_1}]}
  fig4b: {datasets: [toyset], rows: [{method: toy}]}
  fig3: {datasets: [toyset], rows: [{method: toy}]}
"""


@pytest.fixture(scope="module")
def toy_checkout(tmp_path_factory):
    """A copy of the repository with the toy module and one registry line per kind."""
    dest = tmp_path_factory.mktemp("toy") / "repo"
    top = {".venv", ".git", "results", ".snakemake", "data"}

    def ignore(folder, names):
        return [n for n in names if n == "__pycache__" or (folder == str(ROOT) and n in top)]

    shutil.copytree(ROOT, dest, ignore=ignore)
    (dest / "src/corereg/toy_kinds.py").write_text(TOY_MODULE)
    registry = dest / "src/corereg/adapters/__init__.py"
    registry.write_text(
        registry.read_text()
        + '\nMETHOD_KINDS.register("toy", "corereg.toy_kinds:Toy")\n'
        + 'SOURCE_KINDS.register("toy_source", "corereg.toy_kinds:ToySource")\n'
    )
    (dest / "toy.yaml").write_text(textwrap.dedent(TOY_CONFIG))
    return dest


def _run(args, cwd, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(cwd / "src")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_a_toy_method_and_source_kind_run_through_the_dry_run_and_the_plan(toy_checkout):
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "1", "-n", "-p", "table1"]
    proc = _run([*snakemake, "--configfile", "toy.yaml"], toy_checkout)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    out = proc.stdout
    assert "register --method toy" in out and '"strength":1.5' in out
    assert "prepare --dataset toyset" in out and '"kind":"toy_source"' in out
    plan = _run([sys.executable, "-m", "corereg", "plan", "--configfile", "toy.yaml"], toy_checkout)
    assert plan.returncode == 0, plan.stderr
    assert "toyset" in plan.stdout
    # the kind's own schema node checks its parameters
    bad = toy_checkout / "bad.yaml"
    bad.write_text("methods:\n  toy: {params: {strenght: 1}}\n")
    proc = _run([*snakemake, "--configfile", "toy.yaml", "bad.yaml"], toy_checkout)
    assert proc.returncode != 0
    assert "methods.toy.params: unknown parameters ['strenght'] of method kind 'toy'" in (
        proc.stdout + proc.stderr
    )


class _ToyMethodKind(MethodKind):
    """A toy kind whose method class checks its parameters against the adapter's node."""

    name = "toy_inproc"
    method = "test_adapters:_ToyMethod"

    def schema_node(self):
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {"strength": {"type": "number", "minimum": 0, "default": 2.0}},
        }


def _toy_method_class():
    from corereg.registration.methods import Initial

    class ToyMethod(Initial.__mro__[1]):  # the Method base
        kind = "toy_inproc"

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.resolve_params()

        def register(self, fixed, moving):
            import numpy as np

            return np.full((*fixed.shape, 3), self.params["strength"], dtype=np.float32)

    return ToyMethod


def test_a_kind_registered_in_process_checks_params_with_its_own_node():
    import numpy as np
    import torch

    globals()["_ToyMethod"] = _toy_method_class()
    METHOD_KINDS.register("toy_inproc", _ToyMethodKind)
    try:
        method = METHOD_KINDS["toy_inproc"].make({}, torch.device("cpu"))
        assert method.params == {"strength": 2.0}  # the node's default
        assert float(method.register(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))[0, 0, 0, 0]) == 2.0
        with pytest.raises(CoreregError, match=r"unknown parameters \['strenght'\]"):
            METHOD_KINDS["toy_inproc"].make({"strenght": 1}, torch.device("cpu"))
    finally:
        METHOD_KINDS._entries.pop("toy_inproc")
        METHOD_KINDS._made.pop("toy_inproc", None)
