"""RAD-ChestCT: npz orientation, resampling geometry, longitudinal pairs and the patient split."""

import csv

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from corereg.data import radchestct as rc
from corereg.errors import InputError


def test_a_marker_on_the_patients_left_ends_on_the_left_in_world_coordinates(tmp_path):
    ct = np.full((40, 30, 50), -1000, dtype=np.int16)  # (S->I, A->P, R->L)
    ct[5, 10, 45] = 1000  # superior, anterior, patient's LEFT (high index on the R->L axis)
    np.savez_compressed(tmp_path / "trn00001.npz", ct=ct)
    img = rc.npz_to_canonical(tmp_path / "trn00001.npz")
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert np.allclose(np.sqrt((img.affine[:3, :3] ** 2).sum(0)), 0.8)
    idx = np.argwhere(np.asarray(img.dataobj) == 1000)[0]
    x, y, z = (img.affine @ [*idx, 1])[:3]
    # RAS+: +x = patient's right, +y = anterior, +z = superior; the volume centre is the origin
    assert x < 0 and y > 0 and z > 0
    assert (
        idx[0] < 25 // 5
    )  # first canonical axis runs left -> right: the left marker has a small index


def test_resampling_keeps_world_positions_and_label_ids():
    ramp = np.fromfunction(lambda i, j, k: 2.0 * i + 3.0 * j - k, (50, 40, 30)).astype(np.float32)
    img = nib.Nifti1Image(ramp, np.diag([0.8, 0.8, 0.8, 1.0]))
    out = rc.resample(img, (1.5, 1.5, 1.5), order=1)
    assert out.shape == (27, 21, 16)
    data = np.asarray(out.dataobj)
    # every output voxel holds the input's value at the same world position (linear: exact for a ramp)
    for v in [(0, 0, 0), (10, 7, 3), (26, 20, 15)]:
        world = out.affine @ [*v, 1]
        src = np.linalg.solve(img.affine, world)[:3]
        expected = 2.0 * src[0] + 3.0 * src[1] - src[2]
        if (src <= np.array(ramp.shape) - 1).all():
            assert data[v] == pytest.approx(expected, abs=1e-3)
    labels = nib.Nifti1Image(
        np.random.default_rng(0).integers(0, 23, (50, 40, 30)).astype(np.uint8), img.affine
    )
    lab = rc.resample(labels, (1.5, 1.5, 1.5), order=0)
    assert lab.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(lab.dataobj))) <= set(
        range(23)
    )


def test_pad_and_crop_move_the_affine_with_the_content():
    data = np.zeros((10, 30, 7), dtype=np.int16) - 1000
    data[4, 20, 3] = 500
    img = nib.Nifti1Image(data, np.diag([1.5, 1.5, 1.5, 1.0]))
    out = rc.pad_crop(img, (16, 16, 16))
    od = np.asarray(out.dataobj)
    assert od.shape == (16, 16, 16) and od.min() == -1000  # padded with the image minimum
    idx = np.argwhere(od == 500)[0]
    assert np.allclose(out.affine @ [*idx, 1], img.affine @ [4, 20, 3, 1])


def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def metadata(tmp_path):
    # patients: A 1 scan, B 2 scans, C 3 scans, D 2 scans of which one is not released, E..J 2 scans each
    rows = [
        ("trn00001.npz", "trn00001", "A"),
        ("trn00002.npz", "trn00002", "B"),
        ("trn00003.npz", "trn00003", "B"),
        ("trn00006.npz", "trn00006", "C"),
        ("trn00004.npz", "trn00004", "C"),
        ("trn00005.npz", "trn00005", "C"),
        ("val00001.npz", "val00001", "D"),
        ("val00002.npz", "val00002", "D"),
    ]
    for k, p in enumerate("EFGHIJ"):
        rows += [
            (f"tst{2 * k:05d}.npz", f"tst{2 * k:05d}", p),
            (f"tst{2 * k + 1:05d}.npz", f"tst{2 * k + 1:05d}", p),
        ]
    meta = _csv(tmp_path / rc.METADATA, ["VolumeAcc_DEID", "NoteAcc_DEID", "MRN_DEID"], rows)
    released = [r[1] for r in rows if r[1] != "val00002"]
    summary = _csv(tmp_path / rc.SUMMARY, ["NoteAcc_DEID"], [[s] for s in released])
    return meta, summary


def test_pairs_follow_the_documented_rule(metadata):
    meta, summary = metadata
    first = rc.longitudinal_pairs(meta, summary, "first_two")
    assert {(p["patient"], p["fixed"], p["moving"]) for p in first if p["patient"] in "ABCD"} == {
        ("B", "trn00002", "trn00003"),
        ("C", "trn00004", "trn00005"),
    }
    assert len(first) == 8  # A has one scan, D one released scan
    assert len(rc.longitudinal_pairs(meta, summary, "consecutive")) == 9
    assert len(rc.longitudinal_pairs(meta, summary, "all")) == 10


def test_split_is_by_patient_seeded_and_sized(metadata):
    meta, summary = metadata
    pairs = rc.longitudinal_pairs(meta, summary, "all")
    split = rc.split_by_patient(pairs, n_train=6, n_test=3, seed=7)
    assert split == rc.split_by_patient(pairs, n_train=6, n_test=3, seed=7)
    train = {p["patient"] for p in split if p["split"] == "train"}
    test = {p["patient"] for p in split if p["split"] == "test"}
    assert not train & test and sum(p["split"] == "test" for p in split) >= 3
    assert split != rc.split_by_patient(pairs, n_train=6, n_test=3, seed=8)


def test_bad_npz_and_csv_are_named(tmp_path):
    np.savez_compressed(tmp_path / "x.npz", volume=np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match=r"x.npz: no array 'ct'"):
        rc.load_npz(tmp_path / "x.npz")
    _csv(tmp_path / "m.csv", ["NoteAcc_DEID"], [["a"]])
    _csv(tmp_path / "s.csv", ["NoteAcc_DEID"], [["a"]])
    with pytest.raises(InputError, match=r"m.csv: column MRN_DEID missing"):
        rc.longitudinal_pairs(tmp_path / "m.csv", tmp_path / "s.csv")


TOKEN = "zenodo-personal-token-123"


def _zenodo_fixture(srv, tmp_path, metadata):
    meta, summary = metadata
    srv.add_zenodo("6406114", rc.METADATA, meta.read_bytes(), token=TOKEN)
    srv.add_zenodo("6406114", rc.SUMMARY, summary.read_bytes(), token=TOKEN)
    rng = np.random.default_rng(0)
    for row in csv.DictReader(open(meta)):
        ct = rng.integers(-1000, 1000, (30, 28, 32)).astype(np.int16)
        buf = tmp_path / f"{row['NoteAcc_DEID']}.npz"
        np.savez_compressed(buf, ct=ct)
        srv.add_zenodo("6406114", buf.name, buf.read_bytes(), token=TOKEN)


@pytest.mark.slow
def test_real_rules_download_only_the_paired_scans_and_convert_them(
    tmp_path, metadata, monkeypatch
):
    import yaml

    from conftest import run_snakemake
    from corereg.data.sources import DownloadError
    from http_fixture import LoopbackServer

    with LoopbackServer() as srv:
        _zenodo_fixture(srv, tmp_path, metadata)
        source = {
            "kind": "radchestct",
            "record": "6406114",
            "api": f"{srv.url}/api",
            "token_env": "CORE_TEST_TOKEN",
            "n_pairs": 8,
            "n_train_pairs": 5,
            "n_test_pairs": 3,
            "pair_rule": "first_two",
            "split": "seeded",
            "seed": 3,
        }
        monkeypatch.delenv("CORE_TEST_TOKEN", raising=False)
        with pytest.raises(DownloadError, match="CORE_TEST_TOKEN is not set"):
            rc.fetch(source, tmp_path / "x" / "raw", log=lambda *_: None)
        monkeypatch.setenv("CORE_TEST_TOKEN", "wrong")
        with pytest.raises(DownloadError, match=r"35747.csv: access not granted .*\(HTTP 403\)"):
            rc.fetch(source, tmp_path / "x" / "raw", log=lambda *_: None)
        monkeypatch.setenv("CORE_TEST_TOKEN", TOKEN)
        override = {
            "results": str(tmp_path / "results"),
            "data_root": str(tmp_path / "data"),
            "datasets": {
                "radchest": {"shape": [32, 32, 32], "spacing": [1.5, 1.5, 1.5], "source": source}
            },
        }
        (tmp_path / "o.yaml").write_text(yaml.safe_dump(override))
        run_snakemake(
            str(tmp_path / "data/radchest/convert"),
            "--profile",
            "profiles/demo",
            "--configfile",
            "workflow/presets/tiny.yaml",
            str(tmp_path / "o.yaml"),
        )
        fetched = {path for path, f in srv.files.items() if any(code == 200 for _, code in f.hits)}
    pairs = list(csv.DictReader(open(tmp_path / "data/radchest/convert/pairs.csv")))
    assert len(pairs) == 8 and {p["split"] for p in pairs} == {"train", "test"}
    needed = {p[r] for p in pairs for r in ("fixed", "moving")}
    got = {p.split("/")[-2][:-4] for p in fetched if p.endswith(".npz/content")}
    assert got == needed  # trn00001 (single scan) and val00002 (not released) were never downloaded
    img = nib.load(
        tmp_path / f"data/radchest/convert/imagesTr/RadChestCT_{pairs[0]['fixed']}_0000.nii.gz"
    )
    assert img.shape == (32, 32, 32) and nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert np.allclose(np.sqrt((img.affine[:3, :3] ** 2).sum(0)), 1.5)
    log = (tmp_path / "results/logs/download/radchest.log").read_text()
    assert TOKEN not in log and "pair list" in log

    # labels: TotalSegmentator v1 multilabel outputs on the converted grid (the authors' lbls_ts/ form)
    from corereg.data.totalseg import id_map

    inverse = {e: t for t, e in id_map("1.5.7")["total"].items()}
    pre = tmp_path / "lbls_ts"
    pre.mkdir()
    for scan in needed:
        img = nib.load(tmp_path / f"data/radchest/convert/imagesTr/RadChestCT_{scan}_0000.nii.gz")
        ts = np.zeros(img.shape, dtype=np.uint8)
        for e in range(1, 23):  # one slab per structure, shifted a little per scan
            ts[(e + int(scan[-1])) % 30 + 1, 4:28, 4:28] = inverse[e]
        nib.save(nib.Nifti1Image(ts, img.affine), pre / f"{scan}_ts.nii.gz")
    override["datasets"]["radchest"]["source"]["totalsegmentator"] = {
        "version": "1.5.7",
        "precomputed": str(pre),
    }
    override["artifacts"] = {"table1": {"datasets": ["radchest"]}}
    override["methods"] = {"core": {"enabled": False}, "convexadam": {"enabled": False}}
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(override))
    run_snakemake(
        "table1",
        "--profile",
        "profiles/demo",
        "--configfile",
        "workflow/presets/tiny.yaml",
        str(tmp_path / "o.yaml"),
    )
    from corereg.data.manifest import load_manifest

    m = load_manifest(tmp_path / "data/radchest/prepared")
    assert (
        len(m.pairs("test")) == 3
        and len(m.pairs("train")) == 5
        and m.labels[22] == "heart_ventricle_right"
    )
    assert int(m.load_labels(pairs[0]["fixed"]).max()) == 22
    table = pd.read_csv(tmp_path / "results/tables/table1.csv")
    assert set(table[table.status == "ok"].method) >= {"initial", "bigalke"}


def test_label_ids_come_from_totalsegmentators_own_class_maps():
    from corereg.data import totalseg

    v1 = totalseg.id_map("1.5.7")["total"]
    # the authors' TS_MAP keys: lobes 13-17, vertebrae 23-34 (T12..T1), heart 44-48
    assert sorted(v1) == [*range(13, 18), *range(23, 35), *range(44, 49)] and sorted(
        v1.values()
    ) == list(range(1, 23))
    assert v1[23] == 6 and v1[34] == 17  # T12 -> 6, T1 -> 17
    v2 = totalseg.id_map("2.18.0")
    assert sorted(v2["total"].values()) == list(range(1, 18))
    assert v2["heartchambers_highres"] == {1: 18, 2: 19, 3: 20, 4: 21, 5: 22}
    ts = np.array(
        [[[0, 13, 44, 51, 23]]]
    )  # 51 (v1 'heart' is not a v1 id we use) maps to background
    assert totalseg.remap(ts, v1).tolist() == [[[0, 1, 18, 0, 6]]]


def test_label_check_says_what_is_missing(tmp_path, monkeypatch):
    from conftest import run_cli

    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "tshome"))
    monkeypatch.delenv("TOTALSEG_LICENSE", raising=False)
    spec = '{"source": {"kind": "radchestct", "totalsegmentator": {"version": "2.18.0"}}}'
    proc = run_cli("label", "--dataset", "radchest", "--spec", spec, "--check")
    assert proc.returncode == 1
    err = proc.stderr
    assert err.startswith("error: TotalSegmentator is not ready:")
    assert "totalseg_download_weights -t total" in err and "TOTALSEG_HOME_DIR" in err
    assert "export TOTALSEG_LICENSE=" in err and "Dataset301" in err


def test_label_check_names_the_version_its_job_runs_and_the_right_downloader(monkeypatch, tmp_path):
    """The main environment carries TotalSegmentator 2.18.0 for its class maps; the default
    label job runs 1.5.7 in its own environment: the check says so, and names the 1.5.7
    downloader for the v1 weights (not the 2.x command on this PATH)."""
    from corereg.data import totalseg

    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path))
    monkeypatch.setattr(totalseg, "installed_version", lambda: "2.18.0")
    problems = totalseg.check({"version": "1.5.7"})
    assert any(
        "this environment has TotalSegmentator 2.18.0, the label job runs 1.5.7" in p
        and "envs/totalseg_v1.yaml" in p
        for p in problems
    )
    weights = next(p for p in problems if "weights" in p and "not found" in p)
    assert "Task251" in weights and "inside the TotalSegmentator 1.5.7 environment" in weights
    monkeypatch.setattr(totalseg, "installed_version", lambda: None)
    assert any("not importable here" in p for p in totalseg.check({"version": "2.18.0"}))
    monkeypatch.setattr(totalseg, "installed_version", lambda: "2.18.0")
    v2 = totalseg.check({"version": "2.18.0"})
    assert not any("this environment has" in p for p in v2)
    assert any("heartchambers_highres" in p and "Dataset291" in p for p in v2)
