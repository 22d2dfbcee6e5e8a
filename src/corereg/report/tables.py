"""Paper tables from per-pair metrics: mean ± std, paper values, differences, Wilcoxon p.

A table is a selection declared in config.yaml (``artifacts.tableN``): rows of
(method, variant) and dataset columns.  A row with no metrics reads "not run";
nothing else about missing methods is special.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from corereg.data.manifest import PAIR_SEP
from corereg.io import write_csv, write_text
from corereg.stats import holm, wilcoxon_paired
from corereg.stats_cluster import bootstrap_diff_ci
from corereg.timing import SECONDS

NOT_RUN = "not run"
KEY = ["dataset", "method", "variant"]
STAT_KEYS = (
    "n_pairs",
    "n_seeds",
    "dice_mean",
    "dice_pooled",
    "dice_pair_mean",
    "dice_std",
    "dice_seed_sd",
    "hd95",
    "sdlogj",
    "sdlogj_l2r",
    "sdlogj_code",
    "sdlogj_std",
    "neg_jac_percent",
    "t_inf",
    "reg_fac",
    "tre",
    "tre_std",
    # Learn2Reg's robustness scores "30": the 0.3 quantile of the per-pair Dice and HD95,
    # the 0.7 quantile of the per-pair SDlogJ (Learn2Reg's formula) and TRE
    "dice_30",
    "hd95_30",
    "sdlogj_30",
    "tre_30",
)
ROBUST_Q = {"dice": 0.3, "hd95": 0.3, "sdlogj_l2r": 0.7, "tre": 0.7}
SDLOGJ_NAMES = {"sdlogj_l2r": "L2R", "sdlogj_code": "code", "sdlogj_std": "std"}
DICE_AGGREGATES = ("pooled", "pair_mean")


PAIR_COLUMNS = {
    "fixed": str,
    "moving": str,
    "dice": float,
    "n_structures": float,
    "hd95": float,
    "sdlogj_l2r": float,
    "sdlogj_code": float,
    SECONDS: float,
    "device": str,
}


def rebuild_hint(path) -> str:
    """How to recover from a damaged or missing per-run file (Snakemake does not rebuild a
    missing intermediate file on its own while the table that used it is up to date)."""
    return f"delete it and run `snakemake {path}` to rebuild it, then make the table again"


def _read_pairs_csv(path) -> pd.DataFrame:
    """One run's pairs.csv, checked: its columns, their types and one row per pair."""
    from corereg.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"file does not exist; run `snakemake {path}` to rebuild it")
    try:
        df = pd.read_csv(path, dtype={"fixed": str, "moving": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(
            path, f"not a readable CSV ({exc.__class__.__name__}); {rebuild_hint(path)}"
        ) from exc
    missing = [c for c in [*KEY, "seed"] if c not in df.columns]
    if missing or df.empty:
        raise InputError(
            path, f"not a metrics table (missing columns {missing or 'rows'}); {rebuild_hint(path)}"
        )
    if "not_run" in df.columns and df.not_run.notna().any():
        return df  # a method whose tool is absent: one row with the reason
    missing = [c for c in PAIR_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, f"missing columns {missing}; {rebuild_hint(path)}")
    for col, kind in PAIR_COLUMNS.items():
        if kind is float and not pd.api.types.is_numeric_dtype(df[col]):
            raise InputError(path, f"column '{col}' holds non-numeric values; {rebuild_hint(path)}")
    if not df.dice.dropna().between(0.0, 1.0).all():
        raise InputError(path, f"column 'dice' holds values outside [0, 1]; {rebuild_hint(path)}")
    if df.duplicated(["dataset", "seed", "fixed", "moving"]).any():
        raise InputError(path, f"a test pair appears twice; {rebuild_hint(path)}")
    return df


def load_pair_metrics(paths, expected: dict | None = None) -> pd.DataFrame:
    """Every run's pairs.csv, checked; ``expected`` maps a dataset to its manifest's test
    pairs ('fixed_moving'), which every run of that dataset must have scored exactly."""
    from corereg.errors import InputError

    frames = []
    for path in paths:
        df = _read_pairs_csv(path)
        scored = "not_run" not in df.columns or df.not_run.isna().all()
        for ds, sub in df.groupby("dataset"):
            if scored and expected and ds in expected:
                got = set(sub.fixed + PAIR_SEP + sub.moving)
                want = set(expected[ds])
                if got != want:
                    raise InputError(
                        path,
                        f"scores {len(got)} pairs, the manifest of {ds} has "
                        f"{len(want)} test pairs ({len(want - got)} missing, "
                        f"{len(got - want)} not in it); {rebuild_hint(path)}",
                    )
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=[*KEY, "seed", "fixed", "moving", "dice"])
    return pd.concat(frames, ignore_index=True)


def expected_pairs(manifests: dict[str, str]) -> dict[str, set[str]]:
    """dataset -> the 'fixed_moving' ids of its manifest's test pairs."""
    from corereg.data.manifest import load_manifest

    return {
        ds: {p["fixed"] + PAIR_SEP + p["moving"] for p in load_manifest(path).pairs("test")}
        for ds, path in manifests.items()
    }


def per_pair(df: pd.DataFrame, dataset, method, variant, column="dice") -> pd.Series:
    """Per-pair values averaged over seeds, indexed by 'fixed_moving'."""
    sel = df[(df.dataset == dataset) & (df.method == method) & (df.variant == variant)]
    if sel.empty:
        return pd.Series(dtype=float)
    key = sel.fixed.astype(str) + PAIR_SEP + sel.moving.astype(str)
    return sel.assign(pair=key).groupby("pair")[column].mean()


def pooled_dice(dice: pd.Series, n_structures: pd.Series) -> float:
    """The released test.py's mean: every (pair, structure) Dice counts once, over the
    structures present in both images; from per-pair means and structure counts."""
    n = n_structures.reindex(dice.index).astype(float)
    return float((dice * n).sum() / n.sum()) if n.sum() > 0 else float("nan")


def summarize(df, dataset, row, sdlogj_col, aggregate: str = "pooled") -> dict:
    if aggregate not in DICE_AGGREGATES:
        raise ValueError(f"dice_aggregate must be one of {DICE_AGGREGATES}, not '{aggregate}'")
    sel = df[
        (df.dataset == dataset) & (df.method == row["method"]) & (df.variant == row["variant"])
    ]
    if sel.empty:
        return {
            "status": NOT_RUN,
            **dict.fromkeys(STAT_KEYS, float("nan")),
            "device": "",
            "reg_fac_status": "",
        }
    dice = per_pair(df, dataset, row["method"], row["variant"]) * 100.0
    n_struct = per_pair(df, dataset, row["method"], row["variant"], "n_structures")
    pooled = pooled_dice(dice, n_struct)
    seed_means = sel.groupby("seed")["dice"].mean() * 100.0
    status = sel["reg_fac_status"].dropna().astype(str) if "reg_fac_status" in sel else []
    mean = lambda col: float(sel[col].mean()) if col in sel else float("nan")  # noqa: E731

    def robust(col, scale=1.0) -> float:
        """Learn2Reg's "30" score of a column over the pairs (each averaged over seeds)."""
        if col not in sel or sel[col].isna().all():
            return float("nan")
        values = per_pair(df, dataset, row["method"], row["variant"], col).dropna() * scale
        return float(np.quantile(values.to_numpy(), ROBUST_Q[col]))

    tre = per_pair(df, dataset, row["method"], row["variant"], "tre") if "tre" in sel else None
    return {
        "status": "ok",
        "n_pairs": int(dice.size),
        "n_seeds": int(sel.seed.nunique()),
        "dice_mean": pooled if aggregate == "pooled" else float(dice.mean()),
        "dice_pooled": pooled,
        "dice_pair_mean": float(dice.mean()),
        "dice_std": float(dice.std(ddof=0)),
        "dice_seed_sd": float(seed_means.std(ddof=1)) if seed_means.size > 1 else float("nan"),
        "hd95": mean("hd95"),
        "sdlogj": mean(sdlogj_col),
        "sdlogj_l2r": mean("sdlogj_l2r"),
        "sdlogj_code": mean("sdlogj_code"),
        "sdlogj_std": mean("sdlogj_std"),
        "neg_jac_percent": mean("neg_jac_percent"),
        "t_inf": mean(SECONDS),
        "reg_fac": mean("reg_fac"),
        "tre": float(tre.mean()) if tre is not None else float("nan"),
        "tre_std": float(tre.std(ddof=0)) if tre is not None else float("nan"),
        "dice_30": robust("dice", 100.0),
        "hd95_30": robust("hd95"),
        "sdlogj_30": robust("sdlogj_l2r"),
        "tre_30": robust("tre"),
        "reg_fac_status": ";".join(sorted(set(status))),
        "device": ";".join(sorted(sel.device.astype(str).unique())),
    }


def build_table(spec: dict, df: pd.DataFrame) -> pd.DataFrame:
    """One tidy row per (table row, dataset) with statistics, paper values and p-values."""
    labels = [r["label"] for r in spec["rows"]]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{spec['artifact']}: row labels must be unique, got {labels}")
    ref = spec.get("reference")
    sdlogj_col = spec["sdlogj"]
    aggregate = spec["dice_aggregate"]
    if spec.get("hd95_lost", "diagonal") == "inf" and "n_lost" in df.columns:
        # Learn2Reg's convention: a structure the warp lost makes the pair's HD95 infinite
        df = df.assign(hd95=df.hd95.where(~(df.n_lost.fillna(0) > 0), np.inf))
    missing = {}  # (dataset, method, variant) -> reason of a method whose tool is absent
    if "not_run" in df.columns:
        marked = df.not_run.notna() & (df.not_run.astype(str) != "")
        for r in df[marked].itertuples():
            missing[(r.dataset, r.method, r.variant)] = f"not run: {r.not_run}"
        df = df[~marked]
    out = []
    for ds in spec["datasets"]:
        ref_dice = per_pair(df, ds["key"], ref["method"], ref["variant"]) if ref else None
        for row in spec["rows"]:
            rec = {
                "row": row["label"],
                "method": row["method"],
                "variant": row["variant"],
                "dataset": ds["key"],
                "dataset_label": ds["display"],
            }
            rec.update(summarize(df, ds["key"], row, sdlogj_col, aggregate))
            absent = missing.get((ds["key"], row["method"], row["variant"]))
            rec["reason"] = (row.get("reason") or absent or "") if rec["status"] != "ok" else ""
            paper = (row.get("paper") or {}).get(ds.get("paper_key") or "", {}) or {}
            for k in ("dice", "dice_std", "sdlogj", "t_inf"):
                v = paper.get(k)
                rec[f"paper_{k}"] = float("nan") if v is None else float(v)
            comparable = rec["status"] == "ok" and not ds.get("synthetic", False)
            rec["delta_dice"] = rec["dice_mean"] - rec["paper_dice"] if comparable else float("nan")
            rec["p"] = float("nan")
            rec["n_test_pairs"] = 0
            rec["diff_to_ref"] = rec["diff_ci_low"] = rec["diff_ci_high"] = float("nan")
            is_ref = ref and row["method"] == ref["method"] and row["variant"] == ref["variant"]
            if rec["status"] == "ok" and ref_dice is not None and not ref_dice.empty and not is_ref:
                mine = per_pair(df, ds["key"], row["method"], row["variant"])
                common = ref_dice.index.intersection(mine.index)
                _, p, n = wilcoxon_paired(ref_dice[common].to_numpy(), mine[common].to_numpy())
                rec["p"], rec["n_test_pairs"] = p, n
                # Dice difference to the reference row with a 95 % interval that resamples
                # scans (inter-patient pairs) or patients (longitudinal pairs)
                diff = (mine[common] - ref_dice[common]).to_numpy() * 100.0
                ids = [c.split(PAIR_SEP, 1) for c in common]
                rec["diff_to_ref"], rec["diff_ci_low"], rec["diff_ci_high"] = bootstrap_diff_ci(
                    diff, [i[0] for i in ids], [i[1] for i in ids], n_boot=2000
                )
            rec["is_reference"] = bool(is_ref)
            out.append(rec)
    table = pd.DataFrame(out)
    table["p_holm"] = holm(table["p"].to_numpy())
    return table


# ----------------------------------------------------------------------------- formatting
def _f(v, fmt="{:.1f}", empty="–"):
    return empty if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _p(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return "<0.001" if v < 1e-3 else f"{v:.3f}"


def _paper_dice(r) -> str:
    std = r.get("paper_dice_std", float("nan"))
    if math.isnan(r["paper_dice"]) or math.isnan(std):
        return _f(r["paper_dice"])
    return f"{r['paper_dice']:.1f} ± {std:.1f}"


def _cells(r) -> list[str]:
    paper = [_f(r["paper_sdlogj"], "{:.3f}")]
    if r["status"] != "ok":
        return [
            NOT_RUN + ("*" if r.get("reason") else ""),
            _paper_dice(r),
            "–",
            "–",
            "–",
            *paper,
            "–",
            "–",
            _f(r["paper_t_inf"], "{:.2f}"),
            "–",
        ]
    dice = f"{r['dice_mean']:.1f} ± {r['dice_std']:.1f}"
    if not math.isnan(r.get("dice_seed_sd", float("nan"))):
        dice += f" (seeds ±{r['dice_seed_sd']:.1f})"
    p = "ref." if r["is_reference"] else _p(r["p_holm"])
    return [
        dice,
        _paper_dice(r),
        _f(r["delta_dice"], "{:+.1f}"),
        _f(r["sdlogj_l2r"], "{:.3f}"),
        _f(r["sdlogj"], "{:.3f}"),
        *paper,
        _f(r["hd95"], "{:.1f}"),
        _f(r["t_inf"], "{:.2f}"),
        _f(r["paper_t_inf"], "{:.2f}"),
        p,
    ]


def columns(spec: dict) -> list[str]:
    """Column heads of one dataset block; the second SDlogJ is the formula compared with the paper."""
    formula = SDLOGJ_NAMES.get(spec["sdlogj"], spec["sdlogj"])
    return [
        "Dice %",
        "paper",
        "Δ",
        "SDlogJ L2R",
        f"SDlogJ {formula}",
        "paper",
        "HD95 mm",
        "T_inf s",
        "paper",
        "p (Holm)",
    ]


ROBUST_COLUMNS = {
    "dice_30": "Dice 30",
    "hd95_30": "HD95 30",
    "sdlogj_30": "SDlogJ 30",
    "tre_30": "TRE 30",
}
ROBUST_FORMAT = {
    "dice_30": "{:.1f}",
    "hd95_30": "{:.1f}",
    "sdlogj_30": "{:.3f}",
    "tre_30": "{:.2f}",
}


def layout(spec: dict, table: pd.DataFrame, robust: bool = False) -> dict:
    """What a rendered table shows, for every format (Markdown, the HTML report): title,
    caption, one block per dataset (heading, column heads, rows of cells) and the note.
    ``robust``: add Learn2Reg's "30" scores (the report shows them; the CSV has them)."""
    blocks = []
    for ds in spec["datasets"]:
        sub = table[table.dataset == ds["key"]]
        n = sub.loc[sub.status == "ok", "n_pairs"]
        npairs = f", {int(n.max())} test pairs" if len(n) else ""
        heads = ["Method", *columns(spec)]
        rows = [[str(r["row"]), *_cells(r)] for _, r in sub.iterrows()]
        if "tre" in sub and sub.tre.notna().any():  # the dataset has keypoints
            at = heads.index("HD95 mm") + 1
            heads.insert(at, "TRE mm")
            for cells, (_, r) in zip(rows, sub.iterrows(), strict=True):
                tre = "–" if math.isnan(r["tre"]) else f"{r['tre']:.2f} ± {r['tre_std']:.2f}"
                cells.insert(at, tre)
        if robust:
            keys = [k for k in ROBUST_COLUMNS if k in sub and sub[k].notna().any()]
            heads += [ROBUST_COLUMNS[k] for k in keys]
            for cells, (_, r) in zip(rows, sub.iterrows(), strict=True):
                cells += [_f(r[k], ROBUST_FORMAT[k]) for k in keys]
        blocks.append({"heading": f"{ds['display']}{npairs}", "columns": heads, "rows": rows})
    return {
        "title": spec["title"],
        "caption": spec.get("caption") or "",
        "blocks": blocks,
        "note": _footnote(spec, table),
    }


def to_markdown(spec: dict, table: pd.DataFrame) -> str:
    view = layout(spec, table)
    lines = [f"# {view['title']}", ""]
    if view["caption"]:
        lines += [view["caption"], ""]
    for block in view["blocks"]:
        lines += [f"## {block['heading']}", ""]
        lines.append("| " + " | ".join(block["columns"]) + " |")
        lines.append("|---|" + "---|" * (len(block["columns"]) - 1))
        lines += ["| " + " | ".join(cells) + " |" for cells in block["rows"]]
        lines.append("")
    lines += [view["note"], ""]
    return "\n".join(lines)


def read_table(path) -> pd.DataFrame:
    """A table's CSV (as ``write_table`` wrote it) back as the frame ``layout`` takes."""
    text_columns = ("row", "label", "reason", "status", "device", "dataset", "dataset_label")
    table = pd.read_csv(path, dtype={c: str for c in text_columns})
    for col in table.columns:
        if col in text_columns or table[col].dtype == object:
            table[col] = table[col].fillna("")
    return table


def _footnote(spec, table) -> str:
    ref = spec.get("reference")
    reasons = table[table.reason.astype(bool)]  # set only on rows that did not run
    why = [
        f"{r} — {reason}"
        for r, reason in dict(zip(reasons.row, reasons.reason, strict=True)).items()
    ]
    parts = [
        f"*Not run: {'; '.join(why)}." if why else "",
        _dice_note(spec["dice_aggregate"]),
        _sdlogj_note(spec["sdlogj"]),
        "HD95: mean over structures of the 95th-percentile symmetric surface distance in mm "
        "(area-weighted surface elements, as the Learn2Reg evaluation computes it).",
        "T_inf: seconds per pair on "
        + (
            ", ".join(sorted({d for d in table.get("device", pd.Series(dtype=str)).dropna() if d}))
            or "–"
        )
        + ".",
        _reg_fac_note(spec, table),
    ]
    if ref:
        parts.append(
            f"p: two-sided Wilcoxon signed-rank test of per-pair Dice against {ref['method']}/"
            f"{ref['variant']}, paired by test pair, Holm-corrected over the table's comparisons; "
            "the CSV adds each row's Dice difference to it with a 95 % interval from a bootstrap "
            "that resamples scans or patients (docs/results.md)."
        )
    if spec.get("seeds"):
        parts.append(
            f"Seeds of trainable methods: {len(spec['seeds'])} ({', '.join(map(str, spec['seeds']))})."
        )
    if spec.get("cl"):
        cl = spec["cl"]
        alpha = (
            f"α_i = {cl['weight']:g}·(1 − i/T), T = {cl['iterations']} (the code's linear decay)"
            if cl["weight_schedule"] == "linear_decay"
            else f"constant α = {cl['weight']:g} (the paper)"
        )
        views = {
            "separate": "own affine draw per view (code)",
            "listing1": "registration input as view A (Listing 1)",
        }
        parts.append(
            f"CoRe: {alpha}; views: {views.get(cl['views'], cl['views'])}"
            + ("" if cl["view_b_grad"] else ", view B without gradient")
            + f"; InfoNCE: {'cosine' if cl['normalize'] else 'inner product'}, negatives {cl['negatives']}, "
            f"{cl['reduction']} (variants override as their labels say)."
        )
    overlap = spec.get("training_overlap") or {}
    for _, r in table.iterrows():
        seen = overlap.get("datasets", {}).get(r["dataset"])
        if seen and r["method"] in overlap.get("methods", []):
            parts.append(
                f"{r['row']} on {r['dataset_label']}: its released model was trained on data "
                f"that include {seen} (uniGradICON's README lists them among its training "
                "sets), so this row is not a held-out result; the paper does not say so."
            )
    if spec.get("paper_source"):
        parts.append(spec["paper_source"].strip())
    if any(d.get("synthetic") for d in spec["datasets"]):
        parts.append(
            "Synthetic data: the paper columns are for orientation only; no Δ is computed."
        )
    return " ".join(p for p in parts if p)


def _dice_note(aggregate: str) -> str:
    how = (
        "every (pair, structure) Dice pooled over the structures present in both images, as the "
        "released test.py averages"
        if aggregate == "pooled"
        else "the mean over test pairs of each pair's mean over structures present in both images"
    )
    return (
        f"Dice: {how} (dice_aggregate: {aggregate}); ± is the std over test pairs of the per-pair "
        "means, which are also what the Wilcoxon tests pair (seed-averaged; 'seeds ±' is the std "
        "of the seed means)."
    )


def _sdlogj_note(formula: str) -> str:
    return (
        "SDlogJ L2R: Learn2Reg's std of log(det J + 3) over the interior, for every row. "
        f"SDlogJ {SDLOGJ_NAMES.get(formula, formula)}: the formula compared with the paper's column "
        f"({formula})"
        + (
            ", the released code's, which pairs the field's channels with the wrong axes and "
            "so does not see a stretch or a fold along the first array axis; the test-time "
            "reg_fac search is tuned on it"
            if formula == "sdlogj_code"
            else ""
        )
        + ". The paper does not say which formula its comparison rows used (docs/results.md)."
    )


def _reg_fac_note(spec: dict, table: pd.DataFrame) -> str:
    if "reg_fac_status" not in table:
        return ""
    missed = table[table.reg_fac_status.astype(str).str.contains("out_of_band")]
    if missed.empty:
        return ""
    rows = "; ".join(
        f"{r.row} ({r.dataset_label}, reg_fac {r.reg_fac:.3g}, SDlogJ code {r.sdlogj_code:.3f})"
        for r in missed.itertuples()
    )
    return (
        "reg_fac search: did not reach the dataset's SDlogJ band within reg_fac_max_rounds for "
        f"{rows}; the last round is reported."
    )


def _tex_escape(s: str) -> str:
    return (
        str(s)
        .replace("\\", r"\textbackslash{}")
        .replace("&", r"\&")
        .replace("%", r"\%")
        .replace("_", r"\_")
        .replace("#", r"\#")
        .replace("±", r"$\pm$")
        .replace("Δ", r"$\Delta$")
        .replace("–", "--")
    )


def to_latex(spec: dict, table: pd.DataFrame) -> str:
    heads = columns(spec)
    ncol = len(heads)
    dss = spec["datasets"]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + _tex_escape(spec["title"]) + "}",
        r"\label{tab:" + spec["artifact"] + "}",
        r"\resizebox{\linewidth}{!}{%",
        r"\begin{tabular}{l" + ("r" * ncol) * len(dss) + "}",
        r"\toprule",
        " & "
        + " & ".join(rf"\multicolumn{{{ncol}}}{{c}}{{{_tex_escape(d['display'])}}}" for d in dss)
        + r" \\",
        "Method & " + " & ".join(_tex_escape(s) for s in heads * len(dss)) + r" \\",
        r"\midrule",
    ]
    for row in spec["rows"]:
        cells = []
        for d in dss:
            r = table[(table.dataset == d["key"]) & (table.row == row["label"])].iloc[0]
            cells += _cells(r)
        lines.append(
            _tex_escape(row["label"]) + " & " + " & ".join(_tex_escape(c) for c in cells) + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    return "\n".join(lines)


STRUCTURE_COLUMNS = [
    "dataset",
    "dataset_label",
    "row",
    "structure",
    "label",
    "dice",
    "pairs",
    "seeds",
    "reference_dice",
    "change",
]


def structure_table(spec: dict, structure_csvs) -> pd.DataFrame:
    """Per structure and row: mean Dice in % over the test pairs where the structure is
    present in both images (every seed's pairs pooled, so seeds are averaged), and the
    change to the table's reference row in points."""
    frames = [pd.read_csv(p, dtype={"fixed": str, "moving": str}) for p in structure_csvs]
    if not frames:
        return pd.DataFrame(columns=STRUCTURE_COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    df = df[df.present.astype(bool)]
    ref = spec.get("reference")

    def means(sub, method, variant):
        s = sub[(sub.method == method) & (sub.variant == variant)]
        return s.groupby(["label", "structure"]).agg(
            dice=("dice", "mean"), pairs=("dice", "size"), seeds=("seed", "nunique")
        )

    out = []
    for ds in spec["datasets"]:
        sub = df[df.dataset == ds["key"]]
        base = means(sub, ref["method"], ref["variant"]) if ref else None
        for row in spec["rows"]:
            m = means(sub, row["method"], row["variant"])
            for (label, structure), r in m.iterrows():
                ref_dice = (
                    float(base.loc[(label, structure), "dice"]) * 100
                    if base is not None and (label, structure) in base.index
                    else float("nan")
                )
                out.append(
                    {
                        "dataset": ds["key"],
                        "dataset_label": ds["display"],
                        "row": row["label"],
                        "structure": structure,
                        "label": int(label),
                        "dice": float(r.dice) * 100,
                        "pairs": int(r.pairs),
                        "seeds": int(r.seeds),
                        "reference_dice": ref_dice,
                        "change": float(r.dice) * 100 - ref_dice,
                    }
                )
    return pd.DataFrame(out, columns=STRUCTURE_COLUMNS)


def write_table(
    spec: dict, pair_csvs, out_prefix, manifests: dict | None = None, structure_csvs=None
) -> pd.DataFrame:
    df = load_pair_metrics(pair_csvs, expected_pairs(manifests or {}))
    table = build_table(spec, df)
    out_prefix = Path(out_prefix)
    write_csv(out_prefix.with_suffix(".csv"), table)
    write_text(out_prefix.with_suffix(".md"), to_markdown(spec, table))
    write_text(out_prefix.with_suffix(".tex"), to_latex(spec, table))
    if structure_csvs is not None:
        structures = structure_table(spec, structure_csvs)
        write_csv(out_prefix.parent / f"{out_prefix.name}_structures.csv", structures)
    return table
