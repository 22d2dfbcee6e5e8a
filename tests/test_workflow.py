"""The Snakemake DAG: the paper's dry run, one-artifact targets, and a real tiny run."""

import json
import re

import pandas as pd
import pytest
import yaml

from conftest import ROOT, run_cli, run_snakemake


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_paper_dry_run_lists_every_step():
    proc = run_snakemake(
        "-n", "-p", "--config", "results=/tmp/corereg-dry", "data_root=/tmp/corereg-dry-data"
    )
    # the real data jobs with their real sources
    assert (
        "https://cloud.imi.uni-luebeck.de/s/32WaSRaTnFk2JeT/download/AbdomenCTCT.zip" in proc.stdout
    )
    assert '"record":"6406114"' in proc.stdout and "ZENODO_TOKEN" in proc.stdout
    counts = job_counts(proc.stdout)
    # 2 datasets; RAD-ChestCT adds convert and label
    assert counts["download"] == 2 and counts["prepare"] == 2
    assert counts["convert"] == 1 and counts["label"] == 1
    # trainable runs x 3 seeds x datasets: table1 (voxelmorph, lapirn, bigalke, bigalke/untrained, bigalke_original,
    # core), table2 (+ core/cl_only), table3 (+ core/aug_none, aug_ti, aug_both), fig4a (6 alphas, abdomen)
    assert counts["train"] == 3 * (2 * (6 + 1 + 3) + 6)
    # + initial, convexadam, deeds, niftyreg, unigradicon once per dataset (SAMConvex is off by default)
    assert (
        counts["register"] == counts["evaluate"] == counts["train"] + 2 * 5
    )  # SAMConvex: not reproduced
    assert counts["table"] == 3 and counts["figure"] == 3 and counts["report_html"] == 1
    assert counts["weights"] == 1  # uniGradICON's released weights, fetched once
    assert "releases/download/unigradicon_weights/Step_2_final.trch" in proc.stdout
    assert "/tmp/corereg-dry/report/index.html" in proc.stdout
    for target in (
        "tables/table1.md",
        "tables/table2.tex",
        "tables/table3.csv",
        "figures/fig3.pdf",
        "figures/fig4a.png",
        "figures/fig4b.png",
    ):
        assert target in proc.stdout


def test_one_table_runs_only_what_it_needs():
    proc = run_snakemake(
        "-n", "table2", "--config", "results=/tmp/corereg-dry", "data_root=/tmp/corereg-dry-data"
    )
    counts = job_counts(proc.stdout)
    assert counts["table"] == 1 and "figure" not in counts
    # bigalke (L_reg only) and core default + cl_only, 2 datasets x 3 seeds
    assert counts["train"] == 18 and counts["register"] == 18
    assert "table1" not in proc.stdout.replace("rule table1", "")
    # nothing that only Table 3 (augmentation variants) or Figure 4a (alpha sweep) needs
    for only_elsewhere in (
        "aug_none",
        "aug_ti",
        "aug_both",
        "alpha_5",
        "convexadam",
        "tables/table3",
    ):
        assert only_elsewhere not in proc.stdout, only_elsewhere
    by_path = run_snakemake(
        "-n",
        "/tmp/corereg-dry/tables/table2.md",
        "--config",
        "results=/tmp/corereg-dry",
        "data_root=/tmp/corereg-dry-data",
    )
    assert job_counts(by_path.stdout)["train"] == 18


def test_declared_future_steps_fail_clearly(tmp_path):
    proc = run_cli(
        "train",
        "--data",
        tmp_path / "data",
        "--method",
        "samconvex",
        "--spec",
        '{"kind": "samconvex"}',
        "--out",
        tmp_path / "m",
    )
    assert proc.returncode == 1
    assert (
        "not implemented: training of method kind 'samconvex'" in proc.stderr
        and "see docs/methods.md" in proc.stderr
    )
    proc = run_cli(
        "download",
        "--dataset",
        "radchest",
        "--spec",
        '{"source": {"kind": "radchestct"}}',
        "--out",
        tmp_path / "r",
    )
    assert (
        proc.returncode == 1
        and proc.stderr == "error: datasets.radchest.source: no Zenodo 'record'\n"
    )
    assert not (tmp_path / "r").exists() and not (tmp_path / "m").exists()
    proc = run_cli(
        "download",
        "--dataset",
        "abdomen",
        "--spec",
        '{"source": {"kind": "abdomenctct"}}',
        "--out",
        tmp_path / "a",
    )
    assert (
        proc.returncode == 1
        and proc.stderr.strip() == "error: datasets.abdomen.source: neither a 'path' nor a 'url'"
    )
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_tiny_end_to_end(tiny_run):
    res = tiny_run / "results"
    for name in ("table1", "table2", "table3"):
        for ext in ("csv", "md", "tex"):
            assert (res / "tables" / f"{name}.{ext}").stat().st_size > 0
    for name in ("fig3", "fig4a", "fig4b"):
        for ext in ("png", "pdf"):
            assert (res / "figures" / f"{name}.{ext}").stat().st_size > 1000
    t1 = pd.read_csv(res / "tables" / "table1.csv")
    ok = t1[t1.status == "ok"]
    # Dice per structure for every table: the reference row's change is zero; the mean of a
    # row's structure values is its Dice over present structures
    for name in ("table1", "table2", "table3"):
        st = pd.read_csv(res / "tables" / f"{name}_structures.csv")
        assert len(st) and st.dice.between(0, 100).all() and (st.pairs >= 1).all()
    st = pd.read_csv(res / "tables" / "table1_structures.csv")
    assert (st[st.row == "CoRe"].change.abs() < 1e-9).all()
    assert st[st.row == "Initial"].change.notna().all()
    assert set(ok.method) == {
        "initial",
        "convexadam",
        "deeds",
        "niftyreg",
        "voxelmorph",
        "lapirn",
        "bigalke",
        "core",
    }
    assert set(t1[t1.status == "not run"].method) == {
        "unigradicon",
        "samconvex",
        "bigalke_original",
    }
    for kind in ("voxelmorph", "lapirn"):  # trained by the train rule, with a validation log
        log = pd.read_csv(res / f"models/synth_abdomen/{kind}/default/seed0/train_log.csv")
        assert log.iteration.iloc[0] == 0 and log.val_dice.notna().all()
    for ds in ("synth_abdomen", "synth_chest"):
        d = ok[ok.dataset == ds].set_index("method")
        assert d.loc["convexadam", "dice_mean"] > d.loc["initial", "dice_mean"] + 5
        assert d.loc["initial", "sdlogj"] < 1e-12 and d.loc["initial", "n_pairs"] == 3
    # the engine: trained with a log (Figure 4b's data), registered with the test-time protocol
    log = pd.read_csv(res / "models/synth_abdomen/bigalke/default/seed0/train_log.csv")
    assert {"iteration", "val_dice", "val_dice_net", "loss", "lr"} <= set(log.columns) and len(
        log
    ) >= 2
    # the register step's timing reaches pairs.csv: run time, its parts, the search, memory
    timing = pd.read_csv(res / "metrics/synth_abdomen/bigalke/default/seed0/pairs.csv")
    assert timing.seconds.gt(0).all() and timing.net_seconds.gt(0).all()
    assert (timing.adam_iters == 5).all() and timing.search_rounds.between(1, 2).all()
    assert timing.reg_fac.notna().all() and timing.peak_rss_mb.gt(100).all()
    # every training measured its phases for `corereg costs`
    costs = json.loads((res / "models/synth_abdomen/core/default/seed0/costs.json").read_text())
    assert costs["phases"]["train_iteration"]["calls"] == 3
    assert costs["phases"]["pseudo_labels"]["units"] == 1  # one refresh of the one pair
    assert costs["form"] == "separate" and costs["peak"]["rss_mb"] > 100
    assert (res / "models/synth_chest/bigalke/untrained/seed0/final.pt").is_file()
    # CoRe's ablations: every Table 2/3 row and every alpha of Figure 4a ran
    for name in ("table2", "table3"):
        t = pd.read_csv(res / "tables" / f"{name}.csv")
        assert (t.status == "ok").all(), t[["row", "dataset", "status"]]
    core_log = pd.read_csv(res / "models/synth_abdomen/core/alpha_5/seed0/train_log.csv")
    assert (core_log.alpha == 5.0).all() and core_log.loss_cl.notna().all()
    md = (res / "tables" / "table1.md").read_text()
    assert "| uniGradICON | not run* |" in md and "| CoRe | " in md and "| DEEDs | " in md
    # switched off in the tiny preset without a reason of its own: the note still says why
    assert "uniGradICON — disabled in this configuration (methods.unigradicon.enabled" in md
    assert "| VoxelMorph | " in md and "| LapIRN | " in md
    assert (
        "| SAMConvex | not run* |" in md
        and "*Not run: " in md
        and "SAMConvex — not reproduced: its SAM embedding" in md
    )
    for name in (
        "table1",
        "table2",
        "table3",
    ):  # every table states its seeds and CoRe's alpha schedule
        note = (res / "tables" / f"{name}.md").read_text()
        assert "Seeds of trainable methods: 1 (0)." in note
        assert "α_i = 10·(1 − i/T), T = 3 (the code's linear decay)" in note
    pairs = pd.read_csv(
        res / "metrics/synth_abdomen/convexadam/default/seed0/pairs.csv", dtype={"fixed": str}
    )
    assert len(pairs) == 3
    for col in (
        "dataset",
        "method",
        "variant",
        "seed",
        "fixed",
        "moving",
        "dice",
        "hd95",
        "sdlogj_l2r",
        "sdlogj_std",
        "sdlogj_code",
        "seconds",
        "device",
    ):
        assert col in pairs.columns
    structures = pd.read_csv(res / "metrics/synth_chest/initial/default/seed0/structures.csv")
    assert len(structures) == 3 * 22 and structures.dice.isna().sum() == (~structures.present).sum()
    # fields.keep = figures: the register steps' folders are gone once scored; Figure 3's
    # pair (the first test pair) is kept for each of its rows
    assert not any((res / "fields").rglob("disp_*.nii.gz"))
    kept = sorted((res / "figure_fields").rglob("disp_*.nii.gz"))
    assert {f.name for f in kept} == {"disp_0003_0004.nii.gz"}  # the first test pair of each
    assert {f.relative_to(res / "figure_fields").parts[:2] for f in kept} == {
        (ds, m)
        for ds in ("synth_abdomen", "synth_chest")
        for m in ("initial", "convexadam", "bigalke", "core")
    }
    for rule in ("prepare", "register", "evaluate", "report"):
        assert any((res / "logs" / rule).rglob("*.log")), rule
        assert any((res / "benchmarks" / rule).rglob("*.tsv")), rule


@pytest.mark.slow
def test_tiny_rerun_is_a_no_op(tiny_run, tmp_path):
    # the trainings read their scans from the scan cache beside each prepared dataset
    for ds in ("synth_abdomen", "synth_chest"):
        entries = list((tiny_run / "data" / ds / "cache").glob(f"{ds}-*/*.image.npy"))
        assert entries, ds
    costs = json.loads(next((tiny_run / "results/models").rglob("costs.json")).read_text())
    assert costs["data_placement"] == "cache" and "data_wait" in costs["phases"]
    # where the scans live changes no number: changing it reruns nothing
    elsewhere = tmp_path / "where.yaml"
    elsewhere.write_text(
        yaml.safe_dump({"training_data": {"on_device": True, "cache_dir": str(tmp_path)}})
    )
    for extra in ([], [str(elsewhere)]):
        proc = run_snakemake(
            "-n",
            "--profile",
            "profiles/demo",
            "--configfile",
            "workflow/presets/tiny.yaml",
            *extra,
            "--config",
            f"results={tiny_run}/results",
            f"data_root={tiny_run}/data",
        )
        assert "Nothing to be done" in proc.stdout + proc.stderr


def test_readme_shows_the_two_commands_first():
    text = (ROOT / "README.md").read_text()
    first = text.index("make demo")
    assert first < text.index("make test") < text.index("snakemake --cores")


@pytest.mark.slow
def test_a_table_of_ones_own_and_a_row_added_to_a_paper_table(tiny_run, tmp_path):
    """A user-named table of two variants, and a row added to Table 2 without retyping it,
    rendered from the tiny run's scores (only the two table jobs run)."""
    import shutil

    from conftest import run_snakemake

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # the shared run stays as it is
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "artifacts:\n"
        "  table4:\n"
        "    type: table\n"
        "    title: 'Table 4: my augmentation ablation'\n"
        "    datasets: [synth_abdomen]\n"
        "    reference: {method: core}\n"
        "    rows: [{method: core, label: CoRe}, {method: core, variant: aug_none, label: none}]\n"
        "  table2:\n"
        "    extra_rows: [{method: core, variant: aug_ti, label: 'CoRe with T_i'}]\n"
    )
    res = run / "results"
    proc = run_snakemake(
        f"{res}/tables/table4.md",
        f"{res}/tables/table2.md",
        "--profile",
        "profiles/demo",
        "--configfile",
        "workflow/presets/tiny.yaml",
        str(mine),
        "--config",
        f"results={res}",
        f"data_root={run}/data",
        "--forcerun",
        "table",
    )
    assert "rule train" not in proc.stdout and "rule register" not in proc.stdout
    t4 = pd.read_csv(res / "tables" / "table4.csv")
    assert list(dict.fromkeys(t4.row)) == ["CoRe", "none"]
    assert (t4.status == "ok").all()
    md = (res / "tables" / "table4.md").read_text()
    assert "Table 4: my augmentation ablation" in md and "| none |" in md
    t2 = pd.read_csv(res / "tables" / "table2.csv")
    assert list(dict.fromkeys(t2.row))[-1] == "CoRe with T_i"
