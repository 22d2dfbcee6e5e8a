"""A comparison method whose tool is absent: 'not run: <reason>' from train to the table."""

import json

import pandas as pd
import torch

from conftest import run_cli
from corereg.data.synthetic import generate_abdomen
from corereg.report.tables import build_table, to_markdown


def cli(*args, shim):
    """corereg with ``shim`` (a package that fails to import) ahead of the real packages."""
    return run_cli(*args, env={"PYTHONPATH": str(shim)})


def test_absent_tool_reaches_the_table_with_its_reason(tmp_path):
    shim = tmp_path / "shim" / "voxelmorph"  # an installation whose import fails
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        "raise ImportError('simulated: voxelmorph is not installed')\n"
    )
    data = generate_abdomen(
        tmp_path / "prep", "abd", (16, 16, 16), (20.0, 20.0, 20.0), 2, 2, seed=0
    )
    spec = json.dumps({"kind": "voxelmorph", "params": {"iterations": 2}, "seed": 0, "dataset": {}})

    def train(out, if_missing):
        return cli(
            "train",
            "--data",
            data,
            "--method",
            "voxelmorph",
            "--spec",
            spec,
            "--out",
            out,
            "--if-missing",
            if_missing,
            shim=shim.parent,
        )

    # strict: one clear line naming the install command, nothing written
    proc = train(tmp_path / "m0", "fail")
    assert proc.returncode == 1 and "pip install voxelmorph==0.3.4" in proc.stderr
    assert not (tmp_path / "m0" / "final.pt").exists()

    # report: train -> register -> evaluate carry the reason
    model = tmp_path / "m"
    proc = train(model, "report")
    assert proc.returncode == 0, proc.stderr
    assert "simulated" in torch.load(model / "final.pt", weights_only=False)["not_run"]
    fields = tmp_path / "fields"
    proc = cli(
        "register",
        "--method",
        "voxelmorph",
        "--manifest",
        data,
        "--out-dir",
        fields,
        "--checkpoint",
        model / "final.pt",
        "--if-missing",
        "report",
        shim=shim.parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in fields.iterdir()) == [".corereg-output", "not_run.json"]
    ev = json.dumps({"dataset": "abd", "method": "voxelmorph", "variant": "default", "seed": 0})
    proc = cli(
        "evaluate",
        "--manifest",
        data,
        "--fields",
        fields,
        "--spec",
        ev,
        "--out-structures",
        tmp_path / "s.csv",
        "--out-pairs",
        tmp_path / "p.csv",
        shim=shim.parent,
    )
    assert proc.returncode == 0, proc.stderr
    pairs = pd.read_csv(tmp_path / "p.csv")
    assert len(pairs) == 1 and "simulated" in pairs.not_run[0]

    ok = pd.DataFrame(
        {
            "dataset": "abd",
            "method": "initial",
            "variant": "default",
            "seed": 0,
            "fixed": ["0003"],
            "moving": ["0004"],
            "dice": 0.3,
            "n_structures": 2,
            "hd95": 5.0,
            "sdlogj_l2r": 0.0,
            "seconds": 0.01,
            "device": "cpu",
        }
    )
    spec_t = {
        "artifact": "t",
        "title": "T",
        "sdlogj": "sdlogj_l2r",
        "dice_aggregate": "pooled",
        "reference": None,
        "datasets": [{"key": "abd", "display": "Abd", "paper_key": "abdomen", "synthetic": True}],
        "rows": [
            {"method": "initial", "variant": "default", "label": "Initial"},
            {"method": "voxelmorph", "variant": "default", "label": "VoxelMorph"},
        ],
    }
    table = build_table(spec_t, pd.concat([ok, pairs], ignore_index=True))
    row = table[table.method == "voxelmorph"].iloc[0]
    assert (
        row.status == "not run" and row.reason.startswith("not run: ") and "simulated" in row.reason
    )
    assert table[table.method == "initial"].iloc[0].status == "ok"
    md = to_markdown(spec_t, table)
    assert "| VoxelMorph | not run*" in md and "simulated: voxelmorph is not installed" in md
