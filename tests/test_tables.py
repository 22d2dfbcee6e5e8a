"""Tables from per-pair metrics: statistics, paper columns, p-values, 'not run' rows."""

import numpy as np
import pandas as pd
import pytest

from corereg.report.tables import NOT_RUN, build_table, to_latex, to_markdown, write_table

SPEC = {
    "artifact": "tableX",
    "title": "Table X",
    "sdlogj": "sdlogj_l2r",
    "reference": {"method": "core", "variant": "default"},
    "datasets": [
        {"key": "abd", "display": "AbdomenCT", "paper_key": "abdomen", "synthetic": False}
    ],
    "rows": [
        {"method": "initial", "variant": "default", "label": "Initial"},
        {
            "method": "deeds",
            "variant": "default",
            "label": "DEEDs",
            "paper": {"abdomen": {"dice": 40.0}},
        },
        {
            "method": "core",
            "variant": "default",
            "label": "CoRe",
            "paper": {"abdomen": {"dice": 50.0, "sdlogj": 0.1}},
        },
    ],
}


def metrics(method, dice, seed=0):
    n = len(dice)
    return pd.DataFrame({
        "dataset": "abd", "method": method, "variant": "default", "seed": seed,
        "fixed": [f"{i:04d}" for i in range(n)], "moving": [f"{i + 1:04d}" for i in range(n)],
        "dice": dice, "n_structures": 13, "hd95": 5.0, "sdlogj_l2r": 0.1, "sdlogj_std": 0.2,
        "sdlogj_code": 0.05, "neg_jac_percent": 0.5, "seconds": 1.5, "device": "cpu:2threads",
    })  # fmt: skip


def test_statistics_p_values_and_not_run_rows():
    init = np.array([0.20, 0.22, 0.25, 0.30, 0.21, 0.24])
    core_s0 = init + np.array([0.30, 0.31, 0.28, 0.33, 0.29, 0.30])
    core_s1 = core_s0 + 0.02
    df = pd.concat(
        [metrics("initial", init), metrics("core", core_s0, 0), metrics("core", core_s1, 1)]
    )
    t = build_table(SPEC, df).set_index("row")
    assert t.loc["DEEDs", "status"] == NOT_RUN and np.isnan(t.loc["DEEDs", "dice_mean"])
    core_pp = (core_s0 + core_s1) / 2 * 100
    assert t.loc["CoRe", "dice_mean"] == pytest.approx(core_pp.mean())
    assert t.loc["CoRe", "dice_std"] == pytest.approx(core_pp.std())
    assert t.loc["CoRe", "n_seeds"] == 2
    assert t.loc["CoRe", "dice_seed_sd"] == pytest.approx(
        np.std([core_s0.mean(), core_s1.mean()], ddof=1) * 100
    )
    assert t.loc["CoRe", "delta_dice"] == pytest.approx(core_pp.mean() - 50.0)
    # 6 pairs, all differences of one sign: exact two-sided p = 2/64; one comparison -> Holm = p
    assert t.loc["Initial", "p"] == pytest.approx(2 / 64)
    assert t.loc["Initial", "p_holm"] == pytest.approx(2 / 64)
    assert np.isnan(t.loc["CoRe", "p"]) and t.loc["CoRe", "is_reference"]
    md = to_markdown(SPEC, t.reset_index())
    assert "| DEEDs | not run | 40.0 |" in md
    assert "| CoRe | " in md and "ref." in md
    tex = to_latex(SPEC, t.reset_index())
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex


def test_reference_not_run_gives_no_p_values(tmp_path):
    df = metrics("initial", [0.2, 0.3, 0.4])
    p = tmp_path / "pairs.csv"
    df.to_csv(p, index=False)
    t = write_table(SPEC, [p], tmp_path / "tableX")
    assert t.p.isna().all()
    assert (tmp_path / "tableX.md").read_text().count("not run") == 2
    assert (tmp_path / "tableX.csv").is_file() and (tmp_path / "tableX.tex").is_file()


def test_synthetic_datasets_get_no_delta():
    spec = {**SPEC, "datasets": [{**SPEC["datasets"][0], "synthetic": True}]}
    t = build_table(spec, metrics("core", [0.5, 0.6]))
    assert t.delta_dice.isna().all()


def test_paper_std_and_source_are_printed():
    rows = [dict(r) for r in SPEC["rows"]]
    rows[1]["paper"] = {"abdomen": {"dice": 46.5, "dice_std": 8.1, "sdlogj": 0.058, "t_inf": 45.2}}
    spec = {**SPEC, "rows": rows, "paper_source": "Paper columns: from somewhere specific."}
    df = pd.concat([metrics("initial", [0.2, 0.3]), metrics("core", [0.5, 0.6])])
    md = to_markdown(spec, build_table(spec, df))
    assert "| DEEDs | not run | 46.5 ± 8.1 | – | – | – | 0.058 | – | – | 45.20 | – |" in md
    assert "Paper columns: from somewhere specific." in md
    assert "from somewhere" not in to_markdown(SPEC, build_table(SPEC, df))
