"""Any Learn2Reg task: the release layout from a loopback-served archive or a local
folder, pairs from the dataset json, keypoints and TRE, bad inputs in one line, and a
configuration that names only the task running Table 1 end to end."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, run_snakemake
from corereg.adapters import SOURCE_KINDS
from corereg.data import learn2reg
from corereg.data.manifest import load_manifest
from corereg.data.settings import SourceSettings
from corereg.errors import InputError
from corereg.evaluation import tre_mm
from http_fixture import LoopbackServer
from l2r_fixture import LABELS, SHAPE, SHIFT, SPACING, TASK, dataset_entry, make_task, name, zipped


def L2R(**keys) -> dict:
    return {"kind": "learn2reg", **keys}


def _prepare(raw, out, source: dict):
    spec = dataset_entry({k: v for k, v in source.items() if k != "kind"})
    args = argparse.Namespace(raw=str(raw), out=str(out), dataset="toy")
    SOURCE_KINDS["learn2reg"].prepare(args, spec, SourceSettings.of(spec["source"]))
    return load_manifest(out)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return make_task(tmp_path_factory.mktemp("l2r"))


def test_an_archive_from_the_host_gives_the_json_pairs_and_keypoints(task, tmp_path):
    with LoopbackServer() as srv:
        srv.add(f"/files/{TASK}.zip", zipped(task))
        source = {"kind": "learn2reg", "url": f"{srv.url}/files/{TASK}.zip", "retries": 0}
        raw = learn2reg.fetch(source, tmp_path / "toy" / "raw", log=lambda *_: None)
    m = _prepare(raw, tmp_path / "toy" / "prepared", source)
    # two time points per subject: case ids carry the modality
    assert [(p["fixed"], p["moving"]) for p in m.pairs("test")] == [
        ("0001-0000", "0001-0001"),
        ("0002-0000", "0002-0001"),
    ]
    assert [(p["fixed"], p["moving"]) for p in m.pairs("train")] == [
        ("0003-0000", "0003-0001"),
        ("0004-0000", "0004-0001"),
    ]
    assert m.labels == LABELS and m.meta["source"] == "toylung"
    kp = m.keypoints_path("0002-0001")
    assert kp.name == name(2, 1, ".csv") and kp.is_file()
    fixed = np.loadtxt(m.keypoints_path("0002-0000"), delimiter=",")
    assert np.array_equal(np.loadtxt(kp, delimiter=",") - fixed, np.tile(SHIFT, (12, 1)))


def test_a_local_folder_is_used_where_it_lies(task, tmp_path):
    raw = learn2reg.fetch(L2R(path=str(task.parent)), tmp_path / "toy" / "raw", log=print)
    assert json.loads((raw / "location.json").read_text())["root"] == str(task.resolve())
    m = _prepare(raw, tmp_path / "toy" / "prepared", {"path": str(task.parent)})
    assert m.image_path("0001-0000").resolve() == (task / "imagesTr" / name(1, 0)).resolve()
    # the plan counts the pairs from the task's json before anything runs
    counts = SOURCE_KINDS["learn2reg"].counts(
        SourceSettings.of({"kind": "learn2reg", "path": str(task.parent)})
    )
    assert (counts.train_pairs, counts.test_pairs, counts.train_scans) == (2, 2, 4)
    # its files are the download step's inputs (it reruns when one changes); an archive's none
    kind = SOURCE_KINDS["learn2reg"]
    watched = kind.watched(SourceSettings.of(L2R(path=str(task.parent))))
    assert str(task / f"{TASK}_dataset.json") in watched
    assert str(task / "imagesTr" / name(1, 0)) in watched and all(
        Path(f).is_file() for f in watched
    )
    assert kind.watched(SourceSettings.of(L2R(url="https://example.org/t.zip"))) == []
    assert kind.watched(SourceSettings.of(L2R(path=str(tmp_path / "none")))) == []


def test_explicit_lists_and_the_abdomenctct_kind_write_the_same_manifest(tmp_path):
    import io
    import zipfile

    from test_abdomenctct import SOURCE, mini_release

    zipfile.ZipFile(io.BytesIO(mini_release(tmp_path))).extractall(tmp_path / "raw")
    spec = {"shape": [32, 32, 40], "spacing": [12.0] * 3, "eval_labels": list(range(1, 14))}
    texts = []
    for kind, extra in (("abdomenctct", {}), ("learn2reg", {"task": "AbdomenCTCT"})):
        src = {**SOURCE, "kind": kind, **extra}
        out = tmp_path / kind / "prepared"
        (tmp_path / kind).mkdir()
        shutil.copytree(tmp_path / "raw", tmp_path / kind / "raw")
        args = argparse.Namespace(raw=str(tmp_path / kind / "raw"), out=str(out), dataset="abdomen")
        SOURCE_KINDS[kind].prepare(args, {**spec, "source": src}, SourceSettings.of(src))
        texts.append((out / "manifest.json").read_bytes())
    assert texts[0] == texts[1]
    m = json.loads(texts[0])
    assert m["source"] == "abdomenctct" and [c["id"] for c in m["cases"]][:2] == ["0002", "0003"]


def test_tre_known_answers():
    fixed = np.array([[5.0, 6.0, 7.0], [10.0, 12.0, 20.0]])
    moving = fixed + SHIFT
    disp = np.zeros((*SHAPE, 3))
    assert np.allclose(tre_mm(fixed, moving, disp, SPACING), np.linalg.norm(SHIFT * 12.0))
    disp[...] = SHIFT  # the true displacement everywhere: no error
    assert np.allclose(tre_mm(fixed, moving, disp, SPACING), 0.0, atol=1e-9)
    disp[...] = SHIFT + np.array([0.5, 0.0, 0.0])  # half a voxel off along the first axis
    assert np.allclose(tre_mm(fixed, moving, disp, SPACING), 6.0)


def _broken(task, tmp_path, change):
    copy = tmp_path / "copy"
    shutil.copytree(task.parent, copy)
    change(copy / TASK)
    return copy


def _json(root):
    return root / f"{TASK}_dataset.json"


def _missing_scan(root):
    meta = json.loads(_json(root).read_text())
    meta["registration_val"][0]["moving"] = "./imagesTr/ToyLung_0009_0001.nii.gz"
    _json(root).write_text(json.dumps(meta))


def _labels_other_grid(root):
    path = root / "labelsTr" / name(3, 1)
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, :32], img.affine), str(path))


def _keypoint_outside(root):
    path = root / "keypointsTr" / name(2, 0, ".csv")
    pts = np.loadtxt(path, delimiter=",")
    pts[3] = [40.0, 1.0, 1.0]
    np.savetxt(path, pts, delimiter=",")


def _not_a_task(root):
    _json(root).unlink()


@pytest.mark.parametrize(
    "change, culprit, fragment",
    [
        (_missing_scan, name(9, 1), "is named by the task's pairs but does not exist"),
        (_labels_other_grid, name(3, 1), "shape"),
        (
            _keypoint_outside,
            name(2, 0, ".csv"),
            "keypoint 4 [40.0, 1.0, 1.0] lies outside the image",
        ),
        (_not_a_task, "copy", "no *_dataset.json: not a Learn2Reg task folder"),
    ],
    ids=["missing-scan", "labels-other-grid", "keypoint-outside", "not-a-task"],
)
def test_bad_tasks_are_refused_in_one_line_naming_the_file(
    task, tmp_path, change, culprit, fragment
):
    copy = _broken(task, tmp_path, change)
    with pytest.raises(InputError) as err:
        raw = learn2reg.fetch(L2R(path=str(copy)), tmp_path / "toy" / "raw", log=lambda *_: None)
        _prepare(raw, tmp_path / "toy" / "prepared", {"path": str(copy)})
    text = str(err.value)
    assert "\n" not in text and culprit in text and fragment in text
    assert not (tmp_path / "toy" / "prepared").exists()  # nothing half-written


def test_a_configuration_naming_only_the_task_runs_table1(task, tmp_path):
    """Table 1's rows on the task through Snakemake; TRE from its keypoints in the per-pair
    CSV and the table, Learn2Reg's "30" scores in the table's CSV, and the fields exported
    under Learn2Reg's long names."""
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "datasets": {"toy": dataset_entry({"path": str(task.parent)})},
                "artifacts": {"table1": {"datasets": ["toy"]}},
            }
        )
    )
    out = tmp_path / "run"
    common = ["--profile", "profiles/demo", "--configfile", "workflow/presets/tiny.yaml", str(cfg)]
    common += ["--config", f"results={out}/results", f"data_root={out}/data"]
    run_snakemake("table1", "l2r_submission", *common, timeout=3600)
    table = pd.read_csv(out / "results/tables/table1.csv")
    ok = table[table.status == "ok"]
    assert set(ok.dataset) == {"toy"} and {"CoRe", "Bigalke et al.", "Initial"} <= set(ok.row)
    initial = ok[ok.row == "Initial"].iloc[0]
    assert initial.tre == pytest.approx(np.linalg.norm(SHIFT * 12.0), rel=1e-6)
    for col in ("dice_30", "hd95_30", "sdlogj_30", "tre_30"):
        assert ok[col].notna().all(), col
    pairs = pd.read_csv(out / "results/metrics/toy/core/default/seed0/pairs.csv")
    assert pairs.tre.notna().all() and len(pairs) == 2
    # ConvexAdam recovers most of the known shift (the identity's TRE is |SHIFT| x 12 mm)
    assert ok[ok.method == "convexadam"].iloc[0].tre < initial.tre / 2
    assert "TRE mm" in (out / "results/tables/table1.md").read_text()
    sub = out / "results/l2r_submission/toy/core/default/seed0"
    files = sorted(p.name for p in sub.glob("disp_*"))
    assert files == ["disp_0001_0000_0001_0001.nii.gz", "disp_0002_0000_0002_0001.nii.gz"]
    field = nib.load(str(sub / files[0]))
    assert field.shape == (*SHAPE, 3) and field.get_data_dtype() == np.float32


def test_uniGradICON_abdomen_row_says_its_training_data_overlap():
    from corereg import config
    from corereg.report.tables import _footnote
    from corereg.workflow.jobs import Plan

    plan = Plan(config.load(ROOT / "config.yaml", []))
    spec = plan.artifact_spec("table1")
    assert spec["training_overlap"]["datasets"] == {
        "abdomen": "the Learn2Reg abdomen CT scans (L2R-Abdomen)"
    }
    row = {"row": "uniGradICON", "method": "unigradicon", "reason": ""}
    table = pd.DataFrame(
        [
            {**row, "dataset": "abdomen", "dataset_label": "AbdomenCT", "device": "cpu"},
            {**row, "dataset": "radchest", "dataset_label": "RadChestCT", "device": "cpu"},
        ]
    )
    note = _footnote(spec, table)
    assert "uniGradICON on AbdomenCT: its released model was trained on data" in note
    assert "on RadChestCT" not in note
    # phantoms are not the Learn2Reg scans: the demo's tables carry no such note
    demo = Plan(config.load(ROOT / "config.yaml", [ROOT / "workflow/presets/demo.yaml"]))
    phantom = table.assign(dataset="synth_abdomen", dataset_label="AbdomenCT-like")
    assert "released model" not in _footnote(demo.artifact_spec("table1"), phantom)


@pytest.mark.parametrize("example", ["learn2reg_oasis.yaml", "folder.yaml"])
def test_the_example_configurations_plan(example):
    """The examples users copy are valid configurations whose Table 1 plans."""
    from corereg import config
    from corereg.workflow.jobs import Plan

    path = ROOT / "workflow/presets/examples" / example
    plan = Plan(config.load(ROOT / "config.yaml", [path]))
    (key,) = yaml.safe_load(path.read_text())["datasets"]
    assert plan.cfg["artifacts"]["table1"]["datasets"] == [key]
    assert {r.dataset for r in plan.runs("table1")} == {key}
    proc = run_snakemake("-n", "table1", "--configfile", str(path))
    assert "table" in proc.stdout


def test_a_learn2reg_source_without_path_or_url_stops_the_dry_run():
    from corereg import config
    from corereg.errors import CoreregError
    from corereg.workflow.jobs import Plan

    cfg = config.load(ROOT / "config.yaml", [])
    del cfg["datasets"]["abdomen"]["source"]["url"]
    with pytest.raises(CoreregError, match=r"needs a path .* or a url"):
        Plan(cfg)


def test_the_report_shows_the_robustness_scores_the_markdown_leaves_out():
    from corereg.report.tables import layout

    spec = {
        "title": "T",
        "datasets": [{"key": "d", "display": "D"}],
        "sdlogj": "sdlogj_code",
        "dice_aggregate": "pooled",
    }
    row = {
        "row": "A",
        "method": "a",
        "variant": "default",
        "dataset": "d",
        "dataset_label": "D",
        "status": "ok",
        "reason": "",
        "n_pairs": 4,
        "dice_mean": 50.0,
        "dice_std": 1.0,
        "dice_seed_sd": float("nan"),
        "paper_dice": float("nan"),
        "paper_dice_std": float("nan"),
        "delta_dice": float("nan"),
        "sdlogj_l2r": 0.1,
        "sdlogj": 0.1,
        "paper_sdlogj": float("nan"),
        "hd95": 9.0,
        "t_inf": 1.0,
        "paper_t_inf": float("nan"),
        "p_holm": float("nan"),
        "is_reference": True,
        "dice_30": 47.25,
        "hd95_30": 8.5,
        "sdlogj_30": 0.125,
        "tre_30": float("nan"),
        "device": "cpu",
    }
    table = pd.DataFrame([row])
    plain, report = layout(spec, table), layout(spec, table, robust=True)
    assert "Dice 30" not in plain["blocks"][0]["columns"]
    block = report["blocks"][0]
    assert block["columns"][-3:] == ["Dice 30", "HD95 30", "SDlogJ 30"]
    assert block["rows"][0][-3:] == ["47.2", "8.5", "0.125"]


def test_a_lost_structure_makes_hd95_infinite_only_when_asked():
    """hd95_lost: diagonal (default) keeps the pair's finite worst case; inf makes the pair's
    and the row's HD95 infinite, as Learn2Reg's evaluation does."""
    from corereg.report.tables import build_table

    rows = [
        {
            "dataset": "d",
            "method": "m",
            "variant": "default",
            "seed": 0,
            "fixed": f,
            "moving": "9",
            "dice": 0.5,
            "n_structures": 3.0,
            "hd95": h,
            "sdlogj_l2r": 0.1,
            "sdlogj_code": 0.1,
            "seconds": 1.0,
            "device": "cpu",
            "n_lost": lost,
        }
        for f, h, lost in (("1", 10.0, 0), ("2", 12.0, 0), ("3", 80.0, 1))
    ]
    spec = {
        "artifact": "t",
        "rows": [{"label": "M", "method": "m", "variant": "default"}],
        "datasets": [{"key": "d", "display": "D"}],
        "sdlogj": "sdlogj_code",
        "dice_aggregate": "pooled",
    }
    df = pd.DataFrame(rows)
    finite = build_table(spec, df).iloc[0]
    assert finite.hd95 == pytest.approx(34.0) and finite.hd95_30 == pytest.approx(11.2)
    inf = build_table({**spec, "hd95_lost": "inf"}, df).iloc[0]
    assert np.isinf(inf.hd95) and inf.hd95_30 == pytest.approx(11.2)
