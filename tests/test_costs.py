"""The cost model: phase timing, predictions from measured unit costs (known answers),
resources set to auto, the disk figures of `corereg plan`, compact field storage and the
kept Figure 3 field."""

import json
import math

import numpy as np
import pytest
import yaml

from conftest import ROOT, run_cli, run_snakemake
from corereg import config
from corereg.measure import PhaseClock
from corereg.workflow import costs
from corereg.workflow.jobs import Plan, Run

TINY = ROOT / "workflow/presets/tiny.yaml"


def tiny_plan(**over) -> Plan:
    cfg = config.load(ROOT / "config.yaml", [TINY])
    for key, value in over.items():
        cfg[key] = value
    return Plan(cfg)


def model(shape=(32, 32, 40)) -> dict:
    """Unit costs chosen by hand for the tiny AbdomenCT-like set."""
    return {
        "measured": {
            "cpu": {
                "device": "test CPU",
                "datasets": {
                    "abdomen": {
                        "shape": list(shape),
                        "job_overhead_s": 5.0,
                        "train_iteration_s": {"separate": 2.0, "registration": 1.0},
                        "pretrain_iteration_s": 0.5,
                        "pseudo_label_pair_s": 3.0,
                        "label_adam_iters": 5,
                        "validation_pair_s": {"engine": 4.0},
                        "net_pair_s": 1.5,
                        "adam_step_s": 0.1,
                        "adam_setup_s": 0.2,
                        "search_rounds": 2.0,
                        "register_pair_s": {"convexadam": 7.0, "niftyreg": 10.0},
                        "niftyreg_iterations": 10,
                        "evaluate_pair_s": 0.5,
                        "prepare_scan_s": 2.0,
                        "train_scans": 2,
                        "peak_mb": {"train.engine.separate": 1000.0, "register.engine": 800.0},
                    }
                },
            }
        }
    }


def test_phase_clock_separates_the_first_call():
    clock = PhaseClock()
    clock.add("train_iteration", 5.0)  # the first iteration carries the warm-up
    clock.add("train_iteration", 1.0)
    clock.add("train_iteration", 2.0)
    clock.add("pseudo_labels", 6.0, units=3)
    s = clock.summary()
    assert s["train_iteration"]["per_unit_s"] == pytest.approx(8 / 3, abs=1e-4)
    assert s["train_iteration"]["steady_s"] == pytest.approx(1.5)
    assert s["pseudo_labels"]["per_unit_s"] == pytest.approx(2.0)
    assert s["pseudo_labels"]["steady_s"] == pytest.approx(2.0)  # one call: no split
    with clock("validation", units=2):
        pass
    assert clock.summary()["validation"]["calls"] == 1


def test_engine_training_and_registration_known_answers():
    plan = tiny_plan()
    m = model()
    # tiny preset: 1 stage x 3 iterations, validation every 3 on 1 pair, Adam 5 steps,
    # 2 training scans (1 pair), 3 test scans (3 pairs)
    core = costs.predict(plan, "train", Run("synth_abdomen", "core", "default", 0), m, "cpu")
    # 3 iterations x 2.0 + 1 refresh x 1 pair x 3.0 + 2 validations x 1 pair x 4.0 + 5 start
    assert core.seconds == pytest.approx(3 * 2.0 + 3.0 + 2 * 4.0 + 5.0)
    assert core.basis == "measured cpu"
    big = costs.predict(plan, "train", Run("synth_abdomen", "bigalke", "default", 0), m, "cpu")
    assert big.seconds == pytest.approx(3 * 1.0 + 3.0 + 2 * 4.0 + 5.0)
    # L_cl only: registration-form iterations plus the contrastive pretraining (2 iterations)
    cl = costs.predict(plan, "train", Run("synth_abdomen", "core", "cl_only", 0), m, "cpu")
    assert cl.seconds == pytest.approx(big.seconds + 2 * 0.5)
    reg = costs.predict(plan, "register", Run("synth_abdomen", "core", "default", 0), m, "cpu")
    # 3 pairs x (network 1.5 + 2 search rounds x (set-up 0.2 + 5 Adam steps x 0.1)) + 5 start
    assert reg.seconds == pytest.approx(3 * (1.5 + 2 * (0.2 + 5 * 0.1)) + 5.0)
    conv = costs.predict(
        plan, "register", Run("synth_abdomen", "convexadam", "default", 0), m, "cpu"
    )
    assert conv.seconds == pytest.approx(3 * 7.0 + 5.0)
    # NiftyReg scales with its iteration count (tiny preset: 30, measured at 10)
    nifty = costs.predict(
        plan, "register", Run("synth_abdomen", "niftyreg", "default", 0), m, "cpu"
    )
    assert nifty.seconds == pytest.approx(3 * 10.0 * 3 + 5.0)
    ev = costs.predict(plan, "evaluate", Run("synth_abdomen", "core", "default", 0), m, "cpu")
    assert ev.seconds == pytest.approx(3 * 0.5 + 5.0)
    prep = costs.predict(plan, "prepare", Run("synth_abdomen", None, None, 0), m, "cpu")
    assert prep.seconds == pytest.approx(5 * 2.0 + 5.0)
    # the paper's Adam length changes the label and validation pairs by 45 steps x 0.1 s
    longer = tiny_plan()
    longer.cfg["engine"]["adam_iters"] = 50
    core50 = costs.predict(longer, "train", Run("synth_abdomen", "core", "default", 0), m, "cpu")
    assert core50.seconds == pytest.approx(core.seconds + (1 + 2) * 45 * 0.1)


def test_other_shapes_scale_with_voxels_and_gpu_times_come_from_the_paper_ratio():
    plan = tiny_plan()
    half = model(shape=(32, 32, 80))  # measured at twice the voxels
    core = costs.predict(plan, "train", Run("synth_abdomen", "core", "default", 0), half, "cpu")
    assert core.seconds == pytest.approx((3 * 2.0 + 3.0 + 2 * 4.0) / 2 + 5.0)
    assert "scaled by voxels (0.5x)" in core.basis
    # no CUDA measurement: CPU x paper T_inf (1.2 s) / this CPU's (1.5 + 0.2 + 50 x 0.1 s)
    gpu = costs.predict(plan, "train", Run("synth_abdomen", "core", "default", 0), model(), "cuda")
    ratio = 1.2 / (1.5 + 0.2 + 50 * 0.1)
    assert gpu.seconds == pytest.approx((3 * 2.0 + 3.0 + 2 * 4.0) * ratio + 5.0)
    assert "T_inf ratio" in gpu.basis
    minutes, _ = costs.request(gpu)  # the wider margin of an estimate
    assert minutes == max(10, math.ceil((gpu.seconds * 3 + 600) / 60))
    # a dataset without measurements predicts nothing
    none = costs.predict(plan, "train", Run("synth_chest", "core", "default", 0), model(), "cpu")
    assert not none.known and none.basis == "not measured"


def test_resources_from_costs_follow_the_model_where_it_has_measurements(tmp_path):
    path = tmp_path / "costs.yaml"
    path.write_text(yaml.safe_dump(model()))
    plan = tiny_plan(costs_file=str(path))
    plan.cfg["resources"]["train"] = {
        "threads": 1,
        "mem_mb": 7000,
        "runtime": 77,
        "gpu": 0,
        "from_costs": True,
    }
    r = plan.job_resources("train", Run("synth_abdomen", "core", "default", 0))
    seconds = 3 * 2.0 + 3.0 + 2 * 4.0 + 5.0
    assert r["runtime"] == max(10, math.ceil((seconds * 1.5 + 600) / 60))
    # the measured peak: scans and pseudo-labels are read per batch, not held
    assert r["mem_mb"] == math.ceil((1000 * 1.3 + 1024) / 1000) * 1000
    # no measurement for the chest-like set: the declared numbers
    chest = plan.job_resources("train", Run("synth_chest", "core", "default", 0))
    assert chest == {"threads": 1, "mem_mb": 7000, "runtime": 77, "gpu": 0}


def test_snakemake_requests_the_predicted_resources(tmp_path):
    path = tmp_path / "costs.yaml"
    path.write_text(yaml.safe_dump(model()))
    extra = tmp_path / "auto.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "costs_file": str(path),
                "resources": {"train": {"from_costs": True}},
                "artifacts": {"table1": {"datasets": ["synth_abdomen"]}},
            }
        )
    )
    proc = run_snakemake(
        "-n",
        f"{tmp_path}/res/models/synth_abdomen/core/default/seed0/final.pt",
        "--configfile",
        TINY,
        extra,
        "--config",
        f"results={tmp_path}/res",
        f"data_root={tmp_path}/data",
    )
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.split("rule train:")[1]
    # (3 x 2.0 + 3.0 + 2 x 4.0 + 5 s) x 1.5 + 10 min = 10.55 min; 1000 MB x 1.3 + 1 GB
    assert "runtime=11," in job and "mem_mb=3000," in job, job[:800]


def test_plan_prints_predictions_with_their_basis_and_both_disk_figures():
    out = run_cli("plan")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "predicted h" in text and "basis" in text
    assert "Measured costs (workflow/costs.yaml" in text
    # fields kept for Figure 3 only by default, every field on request
    m = __import__("re").search(r"Disk before gzip: ([\d.]+) GB with fields.keep = figures", text)
    assert m and float(m.group(1)) < 100
    # 699.4 GB of scans, checkpoints and every field, plus the trainings' scan cache
    # (35.9 GB) and one running training's pseudo-label files (13.2 GB)
    assert "keeping every field: 748.4 GB as float32" in text
    assert "scan cache GB" in text and "The scan cache of the trainings (counted)" in text
    # TotalSegmentator's job is a GPU job (resources.label.gpu = 1); no basis is repeated
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:14] if line.strip()}
    assert rows["label"][2] == "cuda" and rows["train"][2] == "cuda", rows
    assert rows["register"][2] == "cpu/cuda" and rows["evaluate"][2] == "cpu", rows
    assert "ratio; cuda = cpu x paper T_inf ratio" not in text


def test_plan_on_the_cpu_puts_every_job_there():
    from corereg.workflow.compute_plan import estimate

    plan = Plan(config.load(ROOT / "config.yaml", []))
    plan.cfg["device"] = "cpu"
    jobs, _ = estimate(plan)
    assert set(jobs.device) == {"cpu"}, jobs[["rule", "device"]]


def test_int16_fields_stay_within_half_a_scale_step(tmp_path):
    from corereg.io import load_field, save_field

    rng = np.random.default_rng(0)
    disp = (rng.normal(size=(24, 20, 16, 3)) * 4).astype(np.float32)
    save_field(tmp_path / "f32.nii.gz", disp, np.eye(4))
    save_field(tmp_path / "i16.nii.gz", disp, np.eye(4), storage="int16")
    back = load_field(tmp_path / "i16.nii.gz")
    step = (disp.max() - disp.min()) / 65535
    assert np.abs(back - disp).max() <= step / 2 + 1e-6
    assert np.array_equal(load_field(tmp_path / "f32.nii.gz"), disp)
    assert (tmp_path / "i16.nii.gz").stat().st_size < (tmp_path / "f32.nii.gz").stat().st_size
    with pytest.raises(ValueError, match="storage"):
        save_field(tmp_path / "x.nii.gz", disp, np.eye(4), storage="float16")


def test_keep_field_copies_the_figure_pair_and_refuses_a_bad_index(tmp_path):
    from corereg.data.manifest import field_name, load_manifest
    from corereg.data.synthetic import generate_abdomen
    from corereg.io import save_field

    root = tmp_path / "prep"
    generate_abdomen(root, "synth_abdomen", (16, 16, 16), (24.0, 24.0, 24.0), 2, 3, seed=3)
    m = load_manifest(root)
    fields = tmp_path / "fields"
    fields.mkdir()
    for k, p in enumerate(m.pairs("test")):
        save_field(
            fields / field_name(p["fixed"], p["moving"]),
            np.full((16, 16, 16, 3), k, "f4"),
            np.eye(4),
        )

    def keep(index, out_dir):
        args = ("--fields", fields, "--manifest", root, "--pair-index", index)
        return run_cli("keep-field", *args, "--out-dir", out_dir)

    out = keep(1, tmp_path / "kept")
    assert out.returncode == 0, out.stderr
    second = m.pairs("test")[1]
    kept = sorted(p.name for p in (tmp_path / "kept").glob("disp_*"))
    assert kept == [field_name(second["fixed"], second["moving"])]
    out = keep(3, tmp_path / "k2")
    assert out.returncode == 1 and "pair index 3 is outside its 3 test pairs" in out.stderr
    assert not (tmp_path / "k2").exists()


@pytest.mark.slow
def test_costs_measured_from_a_real_run_predict_its_training_jobs(tiny_run, tmp_path):
    """`corereg costs` on the tiny run: the model rebuilt from its own measurements
    predicts each CoRe training job's wall time within a factor of two."""
    res = tiny_run / "results"
    extra = tmp_path / "where.yaml"
    extra.write_text(yaml.safe_dump({"results": str(res), "data_root": str(tiny_run / "data")}))
    out = run_cli("costs", "update", "--configfile", TINY, extra, "--out", tmp_path / "costs.yaml")
    assert out.returncode == 0, out.stderr
    measured = yaml.safe_load((tmp_path / "costs.yaml").read_text())["measured"]["cpu"]
    abd = measured["datasets"]["abdomen"]
    for key in (
        "job_overhead_s",
        "pseudo_label_pair_s",
        "net_pair_s",
        "adam_step_s",
        "adam_setup_s",
    ):
        assert abd[key] > 0, key
    assert abd["train_iteration_s"]["separate"] > abd["train_iteration_s"]["registration"] > 0
    assert (
        abd["register_pair_s"]["convexadam"] > 0 and abd["peak_mb"]["train.engine.separate"] > 100
    )
    plan = Plan(config.load(ROOT / "config.yaml", [TINY, extra]))
    m = costs.load(tmp_path / "costs.yaml")
    for variant in ("default", "alpha_5", "aug_ti"):
        run = Run("synth_abdomen", "core", variant, 0)
        bench = res / f"benchmarks/train/synth_abdomen/core/{variant}/seed0.tsv"
        actual = float(open(bench).read().splitlines()[-1].split("\t")[0])
        predicted = costs.predict(plan, "train", run, m, "cpu").seconds
        assert actual / 2 < predicted < actual * 2, (variant, actual, predicted)
    assert (
        json.loads((res / "models/synth_abdomen/core/default/seed0/costs.json").read_text())["kind"]
        == "engine"
    )


def test_units_a_dataset_lacks_come_from_another_scaled_by_voxels():
    plan = tiny_plan()  # synth_chest: 32 x 32 x 32, paper_key radchest
    m = model()
    m["measured"]["cpu"]["datasets"]["radchest"] = {
        "shape": [32, 32, 32],
        "job_overhead_s": 5.0,
        "pseudo_label_pair_s": 2.4,
        "label_adam_iters": 5,
        "validation_pair_s": {"engine": 3.2},
        "train_iteration_s": {"registration": 0.8},  # the CoRe form did not run here
        "adam_step_s": 0.08,
        "train_scans": 2,
        "peak_mb": {"train.engine.registration": 900.0},
    }
    run = Run("synth_chest", "core", "default", 0)
    est = costs.predict(plan, "train", run, m, "cpu")
    factor = 32 / 40  # voxels of the chest-like set over the abdomen-like one
    # 1 iteration (1 x 3) with the abdomen's 2.0 s scaled; the chest's own labels and validation
    iters = 3
    refresh = 1 * plan.counts("synth_chest").train_pairs * 2.4
    vals = 2 * 1 * 3.2
    assert est.seconds == pytest.approx(iters * 2.0 * factor + refresh + vals + 5.0)
    assert "some units from abdomen scaled by voxels" in est.basis
    own = costs.predict(plan, "train", Run("synth_chest", "bigalke", "default", 0), m, "cpu")
    assert "from abdomen" not in own.basis


def test_training_memory_grows_with_the_scans_only_when_they_are_kept_in_memory():
    """Scans read per batch from the cache (training_data.on_device auto/false): the
    measured peak whatever the number of training scans; on_device true on the CPU: plus
    every scan beyond the measured run's as float32."""
    m = model()
    run = Run("synth_abdomen", "core", "default", 0)
    plan = tiny_plan()
    cached = costs.predict(plan, "train", run, m, "cpu")
    assert cached.mem_mb == pytest.approx(1000.0)
    many = tiny_plan()
    many.cfg["datasets"]["synth_abdomen"]["source"]["n_train"] = 12
    assert many.counts("synth_abdomen").train_scans == 12
    assert costs.predict(many, "train", run, m, "cpu").mem_mb == pytest.approx(1000.0)
    many.cfg["training_data"]["on_device"] = True
    many.cfg["device"] = "cpu"
    scan_mb = 32 * 32 * 40 * 4 / 2**20
    assert costs.predict(many, "train", run, m, "cpu").mem_mb == pytest.approx(
        1000.0 + 10 * scan_mb
    )


def test_plan_never_keeps_more_fields_than_it_makes():
    """A dataset without test pairs yet (the folder example before its folder exists) keeps
    no figure fields: keeping only the figures' fields is never more than keeping all."""
    from corereg.workflow.compute_plan import disk_use, estimate

    plan = Plan(config.load(ROOT / "config.yaml", [ROOT / "workflow/presets/examples/folder.yaml"]))
    _, dsk = estimate(plan)
    assert dsk["test pairs"].sum() == 0 and dsk["fields kept GB"].sum() == 0
    use = disk_use(plan, dsk)
    assert use["total"] <= use["every_float32"] + 1e-9
