"""config.yaml, the schema, presets and the experiment plan."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import ROOT, run_snakemake
from corereg.config import deep_merge
from corereg.errors import CoreregError
from corereg.workflow.jobs import Plan, Run

SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def load(preset=None):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    if preset:
        cfg = deep_merge(
            cfg, yaml.safe_load((ROOT / f"workflow/presets/{preset}.yaml").read_text())
        )
    return cfg


@pytest.mark.parametrize("preset", [None, "demo", "tiny"])
def test_config_and_presets_are_valid(preset):
    jsonschema.validate(load(preset), SCHEMA)


def test_paper_configuration_matches_the_paper():
    cfg = load()
    abd, chest = cfg["datasets"]["abdomen"], cfg["datasets"]["radchest"]
    assert abd["shape"] == [192, 160, 256] and abd["spacing"] == [2.0, 2.0, 2.0]
    assert len(abd["source"]["train"]) == 20 and len(abd["source"]["test"]) == 10
    assert abd["source"]["test"] == list(range(1, 29, 3))
    assert chest["shape"] == [256, 256, 224] and chest["spacing"] == [1.5, 1.5, 1.5]
    assert len(chest["eval_labels"]) == 22
    assert (chest["source"]["n_train_pairs"], chest["source"]["n_test_pairs"]) == (300, 71)
    alphas = sorted(r["alpha"] for r in Plan(cfg).rows("fig4a"))
    assert alphas == [0, 1, 2, 5, 10, 20]
    table1 = {r["method"] for r in cfg["artifacts"]["table1"]["rows"]}
    assert {
        "deeds",
        "niftyreg",
        "voxelmorph",
        "lapirn",
        "unigradicon",
        "samconvex",
        "bigalke",
        "core",
    } <= table1


def test_plan_runs_and_seeds():
    plan = Plan(load())
    runs = plan.runs("table1")
    assert Run("abdomen", "core", "default", 2) in runs
    assert Run("abdomen", "initial", "default", 0) in runs
    assert Run("abdomen", "initial", "default", 1) not in runs  # deterministic methods run once
    assert {r.variant for r in plan.runs("fig4a")} == {f"alpha_{a}" for a in (0, 1, 2, 5, 10, 20)}
    p = plan.method_params("core", "alpha_5")
    assert p["cl_weight"] == 5.0 and p["cl_weight_schedule"] == "constant" and p["stages"] == 8
    assert plan.method_params("core")["cl_weight_schedule"] == "linear_decay"
    assert plan.stage_input("radchest", "prepare") == ["data/radchest/label"]
    assert plan.stage_input("radchest", "convert") == ["data/radchest/raw"]
    assert plan.stage_input("abdomen", "prepare") == ["data/abdomen/raw"]


def test_demo_preset_runs_every_cpu_runnable_method():
    plan = Plan(load("demo"))
    assert {r.method for r in plan.all_runs()} == {
        "initial",
        "convexadam",
        "deeds",
        "niftyreg",
        "voxelmorph",
        "lapirn",
        "bigalke",
        "core",
    }
    # uniGradICON needs the released weights: off in the demo, with its reason in the table
    assert (
        not plan.enabled("unigradicon")
        and "released 283 MB weights" in plan.method("unigradicon")["reason"]
    )
    assert {r.variant for r in plan.all_runs() if r.method == "bigalke"} == {"default", "untrained"}
    assert {r.dataset for r in plan.all_runs()} == {
        "synth_abdomen",
        "synth_chest",
        "synth_abdomen_small",
    }
    # CoRe rows of every artifact: Table 1 and Figure 4b on the 8 mm sets, the ablations
    # (with their own baseline and CoRe default) on the 11 mm abdomen-like set
    core = {(r.dataset, r.variant) for r in plan.all_runs() if r.method == "core"}
    assert {v for d, v in core if d == "synth_abdomen"} == {"default"}
    assert {v for d, v in core if d == "synth_chest"} == {"default"}
    assert {v for d, v in core if d == "synth_abdomen_small"} == {
        "default",
        "cl_only",
        "aug_none",
        "aug_ti",
        "aug_both",
        "alpha_0",
        "alpha_1",
        "alpha_5",
        "alpha_20",
    }
    assert {(r.dataset, r.variant) for r in plan.all_runs() if r.method == "bigalke"} == {
        ("synth_abdomen", "default"),
        ("synth_abdomen", "untrained"),
        ("synth_chest", "default"),
        ("synth_chest", "untrained"),
        ("synth_abdomen_small", "default"),
    }
    assert all(plan.method_params("core", v)["contrastive"] for _, v in core)


def test_plan_rejects_unknown_references():
    cfg = load()
    bad = copy.deepcopy(cfg)
    bad["artifacts"]["table2"]["rows"].append({"method": "core", "variant": "nope"})
    with pytest.raises(CoreregError, match="method 'core' has no variant 'nope'"):
        Plan(bad)
    bad = copy.deepcopy(cfg)
    bad["artifacts"]["table1"]["datasets"] = ["abdomen", "brain"]
    with pytest.raises(
        CoreregError, match=r"artifacts\.table1\.datasets names the unknown dataset 'brain'"
    ):
        Plan(bad)


def test_schema_rejects_a_wrong_key_and_a_wrong_type():
    cfg = load()
    cfg["datasets"]["abdomen"]["spacingg"] = [2, 2, 2]
    with pytest.raises(jsonschema.ValidationError, match="spacingg"):
        jsonschema.validate(cfg, SCHEMA)
    cfg = load()
    cfg["engine"] = "fast"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cfg, SCHEMA)


def test_engine_switches_are_checked():
    cfg = load()
    cfg["engine"]["reg_los"] = "mse"
    with pytest.raises(jsonschema.ValidationError, match="reg_los"):
        jsonschema.validate(cfg, SCHEMA)
    cfg = load()
    cfg["engine"]["compose_order"] = "backwards"
    with pytest.raises(jsonschema.ValidationError, match="backwards"):
        jsonschema.validate(cfg, SCHEMA)
    cfg = load()
    cfg["methods"]["core"]["variants"]["alpha_5"]["cl_wieght"] = 5
    with pytest.raises(
        CoreregError,
        match=r"methods\.core\.variants\.alpha_5: unknown parameters \['cl_wieght'\] of method kind",
    ):
        Plan(cfg)


def test_snakemake_stops_at_start_up_naming_the_key(tmp_path):
    proc = run_snakemake("-n", "--config", "seedz=[1]", check=False)
    assert proc.returncode != 0 and "seedz" in proc.stdout + proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  abdomen:\n    shape: [192, 160]\n")
    proc = run_snakemake("-n", "--configfile", str(bad), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "shape" in out and "too short" in out


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "methods:\n  core:\n    variants:\n      alpha_5: {cl_weight: -5}\n",
            "methods.core.variants.alpha_5.cl_weight: -5 is less than the minimum of 0",
        ),
        (
            "methods:\n  bigalke:\n    params: {reg_loss: l1}\n",
            "methods.bigalke.params.reg_loss: 'l1' is not one of",
        ),
        (
            "datasets:\n  abdomen:\n    source: {ulr: x}\n",
            "datasets.abdomen.source: Additional properties are not allowed ('ulr' was unexpected)",
        ),
        ("engine: {adam_iters: -1}\n", "engine.adam_iters: -1 is less than the minimum of 0"),
        (
            "methods:\n  niftyreg:\n    params: {levles: 3}\n",
            "methods.niftyreg.params: unknown parameters ['levles'] of method kind 'niftyreg'",
        ),
        (
            "methods:\n  voxelmorph:\n    params: {lr: -0.1}\n",
            "methods.voxelmorph.params.lr: -0.1 is less than or equal to the minimum of 0",
        ),
        (
            "methods:\n  deeds:\n    params: {deedsbcv: {grid: [8, 0]}}\n",
            "methods.deeds.params.deedsbcv.grid.1: 0 is less than the minimum of 1",
        ),
    ],
)
def test_a_bad_key_at_any_level_stops_the_dry_run_with_one_line(tmp_path, override, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(override)
    proc = run_snakemake("-n", "--configfile", str(bad), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and expected in out, out
    error_lines = [line for line in out.splitlines() if "invalid configuration" in line]
    assert len(error_lines) == 1 and len(out.splitlines()) < 15, out


def test_every_rule_declares_log_benchmark_resources_and_env():
    text = "".join(p.read_text() for p in sorted(Path(ROOT, "workflow/rules").glob("*.smk")))
    blocks = [b for b in text.split("\nrule ")[1:] if "shell:" in b]
    assert len(blocks) == 15
    for b in blocks:
        name = b.split(":")[0]
        for key in (
            "log:",
            "benchmark:",
            "threads:",
            "mem_mb=",
            "runtime=",
            "gpu=",
            "conda:",
            "python -m corereg",
        ):
            assert key in b, f"rule {name} lacks {key}"


def test_cpu_isa_pins_one_instruction_set_for_every_torch_step():
    import subprocess
    import sys

    from corereg.config import cpu_isa_env

    assert cpu_isa_env("native") == {}
    env = cpu_isa_env("avx2")
    assert env == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
    with pytest.raises(CoreregError, match="cpu_isa must be one of"):
        cpu_isa_env("sse2")
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file() or "avx2" not in cpuinfo.read_text():
        pytest.skip("this CPU has no AVX2")
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**__import__("os").environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.strip() == "AVX2"


@pytest.mark.parametrize("preset", [None, "demo", "tiny"])
def test_every_disabled_row_says_why(preset):
    plan = Plan(load(preset))
    rows = plan.rows("table1")
    disabled = [r for r in rows if not plan.enabled(r["method"])]
    assert disabled or preset is None
    for r in disabled:
        assert r.get("reason"), r
    for r in rows:
        assert not r.get("reason") or not plan.enabled(r["method"]), r
    by_method = {r["method"]: r for r in rows}
    if preset == "tiny":  # switched off without a reason of its own
        assert by_method["unigradicon"]["reason"] == (
            "disabled in this configuration (methods.unigradicon.enabled: false)"
        )
    if preset == "demo":
        assert "Appendix A" in by_method["bigalke_original"]["reason"]
        assert "283 MB" in by_method["unigradicon"]["reason"]


def test_a_target_given_as_a_configfile_says_so(tmp_path):
    from corereg import config

    with pytest.raises(CoreregError, match=r"a target\? name targets before --configfile"):
        config.load(ROOT / "config.yaml", ["table4"])
    with pytest.raises(CoreregError, match=r"mine\.yaml: configuration file does not exist$"):
        config.load(ROOT / "config.yaml", [tmp_path / "mine.yaml"])
