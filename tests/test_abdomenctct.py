"""AbdomenCTCT from its (miniature) Learn2Reg archive, served by a loopback host, through the real rules."""

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import run_snakemake
from corereg.data import abdomenctct
from corereg.data.manifest import load_manifest
from corereg.data.synthetic import affine_for, render_abdomen
from corereg.errors import InputError
from corereg.io import save_nifti
from http_fixture import LoopbackServer

SHAPE, SPACING = (32, 32, 40), (12.0, 12.0, 12.0)
IDS = range(1, 8)  # scans 1..7: test 1, 4, 7; train the rest


def mini_release(tmp_path, shape=SHAPE) -> bytes:
    """A miniature AbdomenCTCT.zip in the release's layout (folder, file names, dataset json)."""
    src = tmp_path / "release" / "AbdomenCTCT"
    affine = affine_for(shape, SPACING)
    for i in IDS:
        hu, lab = render_abdomen(shape, SPACING, np.random.default_rng(i), 12.0)
        fn = f"AbdomenCTCT_{i:04d}_0000.nii.gz"
        save_nifti(src / "imagesTr" / fn, np.round(hu), affine, dtype=np.int16)
        save_nifti(src / "labelsTr" / fn, lab, affine, dtype=np.uint8)
    meta = {
        "name": "AbdomenCTCT",
        "release": "1.1",
        "tensorImageShape": {"0": list(shape)},
        "labels": {"0": {str(k): v for k, v in abdomenctct.DEFAULT_LABELS.items()}},
        "training": [
            {
                "image": f"./imagesTr/AbdomenCTCT_{i:04d}_0000.nii.gz",
                "label": f"./labelsTr/AbdomenCTCT_{i:04d}_0000.nii.gz",
            }
            for i in IDS
        ],
    }
    (src / "AbdomenCTCT_dataset.json").write_text(json.dumps(meta))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(src.parent).as_posix())
    return buf.getvalue()


SOURCE = {"kind": "abdomenctct", "train": [2, 3, 5, 6], "test": [1, 4, 7], "val": [2, 3]}


def test_fetch_and_prepare_give_the_learn2reg_split(tmp_path):
    data = mini_release(tmp_path)
    with LoopbackServer() as srv:
        srv.add("/s/x/download/AbdomenCTCT.zip", data)
        source = {**SOURCE, "url": f"{srv.url}/s/x/download/AbdomenCTCT.zip", "md5": None}
        raw = abdomenctct.fetch(source, tmp_path / "abdomen" / "raw", log=lambda *_: None)
    lock = json.loads((tmp_path / "abdomen" / "checksums.lock.json").read_text())
    assert lock["AbdomenCTCT.zip"]["size"] == len(data)  # recorded on the first download
    spec = {"shape": list(SHAPE), "spacing": list(SPACING), "source": source}
    out = abdomenctct.prepare(
        raw, tmp_path / "abdomen" / "prepared", "abdomen", spec, log=lambda *_: None
    )
    m = load_manifest(out)
    assert [p["fixed"] + p["moving"] for p in m.pairs("test")] == [
        "00010004",
        "00010007",
        "00040007",
    ]
    assert len(m.pairs("train")) == 6 and len(m.pairs("val")) == 1
    assert m.labels[13] == "left adrenal gland" and m.load_labels("0004").max() <= 13
    assert (
        m.image_path("0001").resolve()
        == (raw / "AbdomenCTCT/imagesTr/AbdomenCTCT_0001_0000.nii.gz").resolve()
    )


def test_wrong_geometry_and_unsafe_archives_are_refused(tmp_path):
    data = mini_release(tmp_path, shape=(32, 32, 36))
    (tmp_path / "a.zip").write_bytes(data)
    abdomenctct.unpack(tmp_path / "a.zip", tmp_path / "raw")
    spec = {"shape": list(SHAPE), "spacing": list(SPACING), "source": SOURCE}
    with pytest.raises(InputError, match=r"AbdomenCTCT_0002_0000.nii.gz: .*shape"):
        abdomenctct.prepare(
            tmp_path / "raw", tmp_path / "prepared", "abdomen", spec, log=lambda *_: None
        )
    assert not (tmp_path / "prepared").exists()
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    (tmp_path / "evil.zip").write_bytes(evil.getvalue())
    with pytest.raises(InputError, match="unsafe path"):
        abdomenctct.unpack(tmp_path / "evil.zip", tmp_path / "raw2")


@pytest.mark.slow
def test_real_rules_download_prepare_train_and_score(tmp_path):
    """download -> prepare -> train (a few iterations) -> register -> evaluate -> Table 1 on the fixture."""
    data = mini_release(tmp_path)
    with LoopbackServer() as srv:
        srv.add("/s/x/download/AbdomenCTCT.zip", data)
        override = {
            "results": str(tmp_path / "results"),
            "data_root": str(tmp_path / "data"),
            "datasets": {
                "abdomen": {
                    "shape": list(SHAPE),
                    "spacing": list(SPACING),
                    "clamp_eval": None,
                    "source": {**SOURCE, "url": f"{srv.url}/s/x/download/AbdomenCTCT.zip"},
                }
            },
            "methods": {"core": {"enabled": False}},
            "artifacts": {"table1": {"datasets": ["abdomen"]}},
        }
        cfg = tmp_path / "override.yaml"
        cfg.write_text(yaml.safe_dump(override))
        tiny = "workflow/presets/tiny.yaml"
        run_snakemake("table1", "--profile", "profiles/demo", "--configfile", tiny, str(cfg))
    res = tmp_path / "results"
    table = pd.read_csv(res / "tables" / "table1.csv")
    ran = table[table.status == "ok"]
    assert set(ran.method) >= {"initial", "convexadam", "bigalke"} and (ran.n_pairs == 3).all()
    assert "AbdomenCT" in (res / "tables" / "table1.md").read_text()
    assert "AbdomenCTCT.zip: " in (res / "logs" / "download" / "abdomen.log").read_text()
