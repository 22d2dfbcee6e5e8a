"""Tables from per-pair metrics: statistics, paper columns, p-values, 'not run' rows."""

import numpy as np
import pandas as pd
import pytest

from corereg.report.tables import (
    NOT_RUN,
    build_table,
    structure_table,
    to_latex,
    to_markdown,
    write_table,
)

SPEC = {
    "artifact": "tableX",
    "title": "Table X",
    "sdlogj": "sdlogj_l2r",
    "dice_aggregate": "pooled",
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
    return pd.DataFrame(
        {
            "dataset": "abd",
            "method": method,
            "variant": "default",
            "seed": seed,
            "fixed": [f"{i:04d}" for i in range(n)],
            "moving": [f"{i + 1:04d}" for i in range(n)],
            "dice": dice,
            "n_structures": 13,
            "hd95": 5.0,
            "sdlogj_l2r": 0.1,
            "sdlogj_std": 0.2,
            "sdlogj_code": 0.05,
            "neg_jac_percent": 0.5,
            "seconds": 1.5,
            "device": "cpu:2threads",
        }
    )


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


def test_pooled_dice_is_the_released_codes_mean_with_a_missing_label():
    """Pair A scores labels 1-3, pair B only 1-2 (label 3 absent from its moving image):
    the released test.py pools the five (pair, label) Dice values; pair_mean averages the
    two per-pair means.  Known answer by hand."""
    from corereg.evaluation import evaluate_pair

    shape = (12, 12, 12)
    fixed = np.zeros(shape, np.uint8)
    fixed[0:4, :, :4], fixed[4:8, :, :4], fixed[8:12, :, :4] = 1, 2, 3
    mov_a = fixed.copy()
    mov_a[0:4, :, 4:8] = 1  # label 1 grows: Dice 2*48/(48+96) = 2/3; labels 2, 3 exact
    mov_b = fixed.copy()
    mov_b[mov_b == 3] = 0  # label 3 missing: not scored; labels 1, 2 exact
    zero = np.zeros((*shape, 3), np.float32)
    rows = []
    for name, moving in (("a", mov_a), ("b", mov_b)):
        _, summary = evaluate_pair(fixed, moving, zero, [1, 2, 3], (2.0, 2.0, 2.0))
        rows.append({"fixed": name, "moving": "m", **summary})
    assert [r["n_structures"] for r in rows] == [3, 2]
    base = {
        "dataset": "abd",
        "method": "core",
        "variant": "default",
        "seed": 0,
        "seconds": 1.0,
        "device": "cpu",
    }
    df = pd.DataFrame([{**base, **r} for r in rows])
    pooled = (2 / 3 + 1 + 1 + 1 + 1) / 5 * 100
    pair_mean = ((2 / 3 + 1 + 1) / 3 + 1) / 2 * 100
    spec = {**SPEC, "rows": [SPEC["rows"][2]], "reference": None}
    t = build_table(spec, df).iloc[0]
    assert t.dice_mean == pytest.approx(pooled) and t.dice_pooled == pytest.approx(pooled)
    assert t.dice_pair_mean == pytest.approx(pair_mean)
    assert pooled - pair_mean == pytest.approx(-10 / 9, abs=1e-9)
    t2 = build_table({**spec, "dice_aggregate": "pair_mean"}, df).iloc[0]
    assert t2.dice_mean == pytest.approx(pair_mean)
    # the ± is the spread of the per-pair means either way
    assert (
        t.dice_std
        == pytest.approx(t2.dice_std)
        == pytest.approx(np.std([(2 / 3 + 2) / 3 * 100, 100.0]))
    )
    md = to_markdown(spec, build_table(spec, df))
    assert "pooled over the structures present in both images" in md
    with pytest.raises(ValueError, match="dice_aggregate"):
        build_table({**spec, "dice_aggregate": "median"}, df)


def test_holm_over_several_comparisons_and_every_metric_column():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.5, 0.6, 8)
    spec = {
        **SPEC,
        "rows": [
            {"method": "initial", "variant": "default", "label": "Initial"},
            {"method": "deeds", "variant": "default", "label": "DEEDs"},
            {"method": "niftyreg", "variant": "default", "label": "NiftyReg"},
            {"method": "core", "variant": "default", "label": "CoRe"},
        ],
    }
    df = pd.concat(
        [
            metrics("core", ref),
            metrics("initial", ref - 0.2),
            metrics("deeds", ref - rng.uniform(-0.01, 0.03, 8)),
            metrics("niftyreg", ref + np.r_[0.01, -0.01, 0.02, -0.02, 0.0, 0.03, -0.03, 0.01]),
        ]
    )
    t = build_table(spec, df)
    from corereg.stats import holm

    np.testing.assert_allclose(t.p_holm.to_numpy(), holm(t.p.to_numpy()), equal_nan=True)
    assert (t.p_holm.dropna() >= t.p.dropna()).all() and t.p.notna().sum() == 3
    # NiftyReg: one zero difference, so 7 of its 8 pairs enter the test
    assert t.set_index("row").loc["NiftyReg", "n_test_pairs"] == 7
    md = to_markdown(spec, t)
    core = next(line for line in md.splitlines() if line.startswith("| CoRe |"))
    cells = [c.strip() for c in core.strip("|").split("|")]
    # Dice, paper, Δ | SDlogJ L2R, SDlogJ L2R (this spec compares L2R), paper, HD95, T_inf, paper, p
    assert cells[4:] == ["0.100", "0.100", "–", "5.0", "1.50", "–", "ref."]
    code = to_markdown(
        {**spec, "sdlogj": "sdlogj_code"}, build_table({**spec, "sdlogj": "sdlogj_code"}, df)
    )
    assert "| SDlogJ L2R | SDlogJ code | paper |" in code
    core = next(line for line in code.splitlines() if line.startswith("| CoRe |"))
    assert "| 0.100 | 0.050 | – | 5.0 | 1.50 |" in core
    assert "first array axis" in code
    assert t.set_index("row").loc["CoRe", "neg_jac_percent"] == pytest.approx(0.5)
    init = t.set_index("row").loc["Initial"]  # 20 points below CoRe on every pair
    assert init.diff_to_ref == pytest.approx(-20.0)
    assert init.diff_ci_low == pytest.approx(-20.0) and init.diff_ci_high == pytest.approx(-20.0)
    nifty = t.set_index("row").loc["NiftyReg"]
    assert nifty.diff_ci_low < nifty.diff_to_ref < nifty.diff_ci_high


def test_a_reg_fac_search_that_missed_its_band_is_reported():
    df = metrics("core", [0.5, 0.6]).assign(reg_fac=27.5, reg_fac_status="out_of_band")
    spec = {**SPEC, "rows": [SPEC["rows"][2]], "reference": None}
    t = build_table(spec, df)
    assert t.iloc[0].reg_fac == 27.5 and t.iloc[0].reg_fac_status == "out_of_band"
    md = to_markdown(spec, t)
    assert "did not reach the dataset's SDlogJ band" in md and "CoRe (AbdomenCT, reg_fac 27.5" in md
    ok = metrics("core", [0.5, 0.6]).assign(reg_fac=12.5, reg_fac_status="in_band")
    assert "did not reach" not in to_markdown(spec, build_table(spec, ok))


def _rendered_row(md: str, section: str, label: str) -> str:
    block = md.split(f"## {section}")[1].split("\n## ")[0]
    return next(line for line in block.splitlines() if line.startswith(f"| {label} |"))


def test_every_published_value_reaches_the_rendered_tables():
    import yaml

    from conftest import ROOT
    from corereg.report.tables import load_pair_metrics
    from corereg.workflow.jobs import Plan

    plan = Plan(yaml.safe_load((ROOT / "config.yaml").read_text()))
    checked = 0
    for name in ("table1", "table2", "table3"):
        spec = plan.artifact_spec(name)
        md = to_markdown(spec, build_table(spec, load_pair_metrics([])))
        for ds in spec["datasets"]:
            for row in spec["rows"]:
                pv = (row.get("paper") or {}).get(ds["paper_key"])
                if not pv:
                    continue
                line = _rendered_row(md, ds["display"], row["label"])
                assert f"| {pv['dice']:.1f} ± {pv['dice_std']:.1f} |" in line, (name, line)
                if "sdlogj" in pv:  # Initial has none
                    assert f"| {pv['sdlogj']:.3f} |" in line, (name, line)
                if "t_inf" in pv:
                    assert f"| {pv['t_inf']:.2f} |" in line, (name, line)
                checked += 1
    assert checked == 2 * (9 + 3 + 4)  # every published row of Tables 1-3, both datasets
    t1 = plan.artifact_spec("table1")
    md1 = to_markdown(t1, build_table(t1, load_pair_metrics([])))
    assert "| 52.6 ± 7.5 | – | – | – | 0.148 | – | – | 1.20 |" in _rendered_row(
        md1, "AbdomenCT", "CoRe"
    )
    assert "| 52.1 ± 6.9 |" in _rendered_row(md1, "AbdomenCT", "uniGradICON")
    assert "| 0.146 |" in _rendered_row(md1, "AbdomenCT", "Bigalke et al.")
    t3 = plan.artifact_spec("table3")
    md3 = to_markdown(t3, build_table(t3, load_pair_metrics([])))
    assert "| 49.4 ± 8.1 |" in _rendered_row(md3, "AbdomenCT", "T_i")


def _example_md(dice="43.4 ± 3.0", paper="52.6 ± 7.5", t_inf="1.38", note="Note."):
    return (
        "# Table 1\n\n## AbdomenCT-like, 10 test pairs\n\n"
        "| Method | Dice % | paper | Δ | SDlogJ L2R | SDlogJ code | paper | HD95 mm | T_inf s | paper | p (Holm) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"| CoRe | {dice} | {paper} | – | 0.070 | 0.062 | 0.148 | 20.1 | {t_inf} | 1.20 | ref. |\n"
        "| uniGradICON | not run* | 52.1 ± 6.9 | – | – | – | 0.117 | – | – | 39.70 | – |\n\n"
        f"{note}\n"
    )


def test_example_check_compares_within_the_stated_tolerances(tmp_path):
    from corereg.report.example import Tolerance, check, compare_table

    ref = _example_md()
    assert compare_table(ref, ref) == []
    assert compare_table(ref, _example_md(dice="42.6 ± 3.4", t_inf="9.99")) == []  # other CPU
    far = compare_table(ref, _example_md(dice="37.0 ± 3.0"))
    assert len(far) == 1 and "Dice %" in far[0] and "43.4" in far[0] and "tolerance 5" in far[0]
    assert compare_table(ref, _example_md(dice="37.0 ± 3.0"), Tolerance(dice=7.0)) == []
    assert compare_table(ref, _example_md(dice="40.0 ± 3.0")) == []  # within the default 5
    assert "paper (Dice %)" in compare_table(ref, _example_md(paper="52.1 ± 7.5"))[0]
    assert compare_table(ref, _example_md(dice="not run*"))  # a row that stopped running
    assert compare_table(ref, _example_md(note="Other note."))
    assert compare_table(ref, ref.replace("| uniGradICON |", "| UniGradICON |"))
    (tmp_path / "ex").mkdir()
    (tmp_path / "demo" / "tables").mkdir(parents=True)
    for name in ("table1", "table2", "table3"):
        (tmp_path / "ex" / f"{name}.md").write_text(ref)
    from corereg.errors import CoreregError

    with pytest.raises(CoreregError, match="no demo table to compare"):
        check(tmp_path / "demo", tmp_path / "ex")
    (tmp_path / "demo" / "tables" / "table1.md").write_text(_example_md(dice="30.0 ± 3.0"))
    problems = check(tmp_path / "demo", tmp_path / "ex")
    assert len(problems) == 1 and problems[0].startswith("table1: ")


def test_structure_table_known_answer(tmp_path):
    """Per-structure Dice: the mean over pairs where the structure is present, every seed's
    pairs pooled; change = row - reference in points; absent structures are left out."""
    rows = []
    for seed, dices in ((0, (0.5, 0.7)), (1, (0.6, 0.8))):  # core, liver over pairs a and b
        for pair, d in zip(("a", "b"), dices, strict=True):
            rows.append(("core", "default", seed, pair, 1, "liver", d, True))
    for pair, d in (("a", 0.4), ("b", 0.6)):
        rows.append(("bigalke", "default", 0, pair, 1, "liver", d, True))
        rows.append(("bigalke", "default", 0, pair, 2, "spleen", 0.0, False))
    rows.append(("core", "default", 0, "a", 2, "spleen", 0.9, True))
    cols = ["method", "variant", "seed", "fixed", "label", "structure", "dice", "present"]
    df = pd.DataFrame(rows, columns=cols).assign(dataset="ds", moving="m", hd95=1.0)
    df.to_csv(tmp_path / "s.csv", index=False)
    spec = {
        "datasets": [{"key": "ds", "display": "DS"}],
        "rows": [
            {"method": "bigalke", "variant": "default", "label": "B"},
            {"method": "core", "variant": "default", "label": "C"},
        ],
        "reference": {"method": "core", "variant": "default"},
    }
    t = structure_table(spec, [tmp_path / "s.csv"]).set_index(["row", "structure"])
    assert t.loc[("C", "liver"), "dice"] == pytest.approx(65.0)
    assert t.loc[("C", "liver"), "pairs"] == 4 and t.loc[("C", "liver"), "seeds"] == 2
    assert t.loc[("B", "liver"), "dice"] == pytest.approx(50.0)
    assert t.loc[("B", "liver"), "change"] == pytest.approx(-15.0)
    assert t.loc[("C", "liver"), "change"] == pytest.approx(0.0)
    assert ("B", "spleen") not in t.index  # absent in both images of every pair
    assert t.loc[("C", "spleen"), "dice"] == pytest.approx(90.0)


def test_the_report_renders_a_table_from_its_data(tmp_path):
    """The HTML report builds each table from the CSV (not from the Markdown): read back,
    the CSV gives the very cells and note the Markdown shows, not-run rows included."""
    from corereg.report.html import layout_to_html
    from corereg.report.tables import layout, read_table

    init = [0.20, 0.22, 0.25, 0.30]
    df = pd.concat([metrics("initial", init), metrics("core", [d + 0.3 for d in init])])
    paths = []
    for method, sub in df.groupby("method"):
        paths.append(tmp_path / f"{method}.csv")
        sub.to_csv(paths[-1], index=False)
    written = write_table(SPEC, paths, tmp_path / "tableX")
    back = read_table(tmp_path / "tableX.csv")
    assert layout(SPEC, back) == layout(SPEC, written)
    assert to_markdown(SPEC, back) == (tmp_path / "tableX.md").read_text()
    page = layout_to_html(layout(SPEC, back))
    assert "<h2>Table X</h2>" in page and page.count("<tr>") == 1 + 3  # head + 3 rows
    assert "<td>not run</td>" in page and '<td class="num">50.0</td>' in page
    assert "ref." in page and "Wilcoxon" in page
