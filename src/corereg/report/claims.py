"""The paper's claims, checked one by one against this run's numbers.

Each claim of ``workflow/claims.yaml`` gets, per dataset, the evidence of this run
(the numbers, the test, the effect with a 95 % confidence interval from the clustered
bootstrap of :mod:`corereg.stats_cluster`) and a verdict: ``holds``, ``does not hold``
or ``cannot be tested`` with the reason (a row that did not run, a training shorter
than the claim's iteration, or too few test pairs to reach the claimed p-value).

A comparison "A above B" holds when the mean per-pair difference is positive, its
interval excludes 0 and, where the claim names a p-value, the Holm-corrected Wilcoxon
test reaches it; it does not hold when the interval lies below 0, or when the test set
is large enough to reach the p-value and does not; otherwise it cannot be decided at
this run's scale.  Per-pair values are averaged over training seeds first.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from corereg.errors import InputError
from corereg.io import atomic_path, write_csv, write_text
from corereg.report.tables import (
    PAIR_SEP,
    build_table,
    expected_pairs,
    load_pair_metrics,
    per_pair,
)
from corereg.stats import holm, wilcoxon_paired
from corereg.stats_cluster import bootstrap_diff_ci

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "cannot be tested"


# The paper's datasets, by the paper_key a configured dataset names.
PAPER_DATASET_NAMES = {"abdomen": "AbdomenCT", "radchest": "RAD-ChestCT"}


def _key(row: dict) -> tuple[str, str]:
    """(method, variant) of a row, or of a row reference in workflow/claims.yaml, where
    the variant may be left out for the method's default."""
    return row["method"], row.get("variant", "default")


def _resolve(ref, rows: list[dict], me=None) -> list[dict]:
    """Rows named by a claim: a list of {method, variant}, or all, paper (the rows with
    published values), first, all_but_first."""
    if ref == "all":
        return [r for r in rows if me is None or _key(r) != _key(me)]
    if ref == "paper":  # the rows the paper reports values for
        return [r for r in rows if r.get("paper") and (me is None or _key(r) != _key(me))]
    if ref == "first":
        return rows[:1]
    if ref == "all_but_first":
        return rows[1:]
    if isinstance(ref, dict):
        ref = [ref]
    out = []
    for item in ref:
        match = [r for r in rows if _key(r) == _key(item)]
        out += match or [
            {
                "method": _key(item)[0],
                "variant": _key(item)[1],
                "label": "/".join(_key(item)),
            }
        ]
    return out


def _pairs(df, ds, row) -> pd.Series:
    return per_pair(df, ds, row["method"], row["variant"]) * 100.0


def compare(df, ds, row, others, p_max: float) -> list[dict]:
    """'row above other' for each other row: difference, interval, Wilcoxon p (Holm)."""
    mine = _pairs(df, ds, row)
    out = []
    for other in others:
        theirs = _pairs(df, ds, other)
        rec = {
            "other": other["label"],
            "n": 0,
            "diff": math.nan,
            "low": math.nan,
            "high": math.nan,
            "p": math.nan,
        }
        if mine.empty or theirs.empty:
            rec["missing"] = row["label"] if mine.empty else other["label"]
            out.append(rec)
            continue
        common = mine.index.intersection(theirs.index)
        diff = (mine[common] - theirs[common]).to_numpy()
        fixed = [c.split(PAIR_SEP, 1)[0] for c in common]
        moving = [c.split(PAIR_SEP, 1)[1] for c in common]
        rec["diff"], rec["low"], rec["high"] = bootstrap_diff_ci(diff, fixed, moving, n_boot=2000)
        _, rec["p"], rec["n"] = wilcoxon_paired(mine[common].to_numpy(), theirs[common].to_numpy())
        out.append(rec)
    ps = holm([r["p"] for r in out])
    m = sum(np.isfinite(ps))
    for r, p in zip(out, ps, strict=True):
        r["p_holm"] = p
        r["verdict"], r["why"] = _verdict(r, p_max, max(m, 1))
    return out


def _verdict(r: dict, p_max: float, m: int) -> tuple[str, str]:
    if r.get("missing"):
        return UNTESTABLE, f"{r['missing']} did not run"
    if r["n"] == 0 or not np.isfinite(r["diff"]):
        return UNTESTABLE, "no pair with a difference"
    tested = p_max < 1.0
    min_p = min(1.0, m * 2.0 / 2.0 ** r["n"])  # smallest Holm p an exact two-sided test can give
    if r["diff"] > 0 and r["low"] > 0 and (not tested or r["p_holm"] < p_max):
        return HOLDS, ""
    if r["high"] < 0:
        return FAILS, "the difference is negative beyond its interval"
    if tested and min_p < p_max and not r["p_holm"] < p_max:
        return FAILS, f"p = {r['p_holm']:.2g} does not reach {p_max:g}"
    if tested and min_p >= p_max:
        return (
            UNTESTABLE,
            f"{r['n']} pairs cannot reach p < {p_max:g} (smallest possible {min_p:.2g})",
        )
    return UNTESTABLE, "the difference is within this run's noise (its interval includes 0)"


def _combine(verdicts: list[str]) -> str:
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    if FAILS in verdicts:
        return FAILS
    return UNTESTABLE


def _fmt_cmp(r: dict) -> str:
    if r.get("missing"):
        return f"vs {r['other']}: not run"
    p = f", p(Holm) {r['p_holm']:.2g}" if np.isfinite(r.get("p_holm", math.nan)) else ""
    return f"vs {r['other']}: {r['diff']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}]{p}"


def evaluate(
    claim: dict, spec: dict, df: pd.DataFrame, logs: dict, table_cache: dict
) -> list[dict]:
    """Rows of (dataset, verdict, evidence) for one claim."""
    art = spec["artifacts"][claim["artifact"]]
    rows = art["rows"]
    out = []
    for paper_key in claim["datasets"]:
        dss = [d for d in art["datasets"] if d.get("paper_key") == paper_key]
        if not dss:
            out.append(
                {
                    "dataset": PAPER_DATASET_NAMES.get(paper_key, paper_key),
                    "verdict": UNTESTABLE,
                    "evidence": "no dataset of this run reproduces it",
                }
            )
            continue
        for ds in dss:
            verdict, evidence, effect = _one(claim, art, rows, ds, df, logs, table_cache)
            out.append(
                {"dataset": ds["display"], "verdict": verdict, "evidence": evidence, **effect}
            )
    return out


def _table(art, df, cache):
    name = art["artifact"]
    if name not in cache:
        cache[name] = build_table({**art, "reference": None}, df).set_index(["dataset", "row"])
    return cache[name]


def _one(claim, art, rows, ds, df, logs, cache):
    kind = claim["kind"]
    key = ds["key"]
    if kind == "beats":
        mes = _resolve(claim["row"], rows)
        others = _resolve(claim["others"], rows, mes[0] if len(mes) == 1 else None)
        results = []
        for me in mes:
            results += [
                (me, r)
                for r in compare(
                    df,
                    key,
                    me,
                    [o for o in others if _key(o) != _key(me)],
                    float(claim.get("p_max", 0.05)),
                )
            ]
        verdict = _combine([r["verdict"] for _, r in results])
        why = sorted({r["why"] for _, r in results if r["why"]})
        ev = "; ".join(f"{me['label']} {_fmt_cmp(r)}" for me, r in results)
        if claim.get("paper") is not None:
            ev += f" (paper: {claim['paper']:+.2f})"
        effect = {}
        if len(results) == 1:
            r = results[0][1]
            effect = {
                "effect": r["diff"],
                "ci_low": r["low"],
                "ci_high": r["high"],
                "p": r.get("p_holm"),
            }
        return verdict, ev + (f". {'; '.join(why)}." if why and verdict != HOLDS else ""), effect
    table = (
        _table(art, df, cache)
        if kind in ("sdlogj_comparable", "slower", "fastest_least_accurate")
        else None
    )
    if kind in ("best", "below"):
        me = _resolve(claim["row"], rows)[0]
        group = _resolve(claim["rows"], rows) if kind == "best" else _resolve(claim["other"], rows)
        means = {r["label"]: _pairs(df, key, r).mean() for r in [*group, me]}
        if not np.isfinite(means[me["label"]]):
            return UNTESTABLE, f"{me['label']} did not run", {}
        ran = {k: v for k, v in means.items() if np.isfinite(v)}
        text = ", ".join(f"{k} {v:.1f}" for k, v in sorted(ran.items(), key=lambda kv: -kv[1]))
        if kind == "below":
            other = group[0]
            if not np.isfinite(means[other["label"]]):
                return UNTESTABLE, f"{other['label']} did not run", {}
            r = compare(df, key, other, [me], 1.0)[0]  # other above me
            return (
                r["verdict"],
                f"{text}; {other['label']} {_fmt_cmp(r)}",
                {"effect": -r["diff"], "ci_low": -r["high"], "ci_high": -r["low"]},
            )
        top = max(ran, key=ran.get)
        rivals = [r for r in group if r["label"] != me["label"] and np.isfinite(means[r["label"]])]
        if top == me["label"]:
            res = compare(df, key, me, rivals, 1.0)
            verdict = _combine([r["verdict"] for r in res]) if res else UNTESTABLE
            return verdict, f"{text}; " + "; ".join(_fmt_cmp(r) for r in res), {}
        winner = next(r for r in group if r["label"] == top)
        r = compare(df, key, winner, [me], 1.0)[0]
        verdict = FAILS if r["verdict"] == HOLDS else UNTESTABLE
        return verdict, f"{text}; {top} {_fmt_cmp(r)}", {}
    if kind == "sdlogj_comparable":
        me = _resolve(claim["row"], rows)[0]
        others = _resolve(claim["others"], rows, me)
        try:
            mine = table.loc[(key, me["label"])]
        except KeyError:
            return UNTESTABLE, f"{me['label']} is not a row of {art['artifact']}", {}
        if mine.status != "ok":
            return UNTESTABLE, f"{me['label']} did not run", {}
        theirs = [table.loc[(key, o["label"])] for o in others if (key, o["label"]) in table.index]
        theirs = [t for t in theirs if t.status == "ok" and t.sdlogj_l2r > 0]
        if not theirs:
            return UNTESTABLE, "no comparison method ran", {}
        top = max(t.sdlogj_l2r for t in theirs)
        ok = (
            mine.sdlogj_l2r <= claim["factor"] * top
            and mine.neg_jac_percent <= claim["max_folding"]
        )
        ev = (
            f"SDlogJ L2R {mine.sdlogj_l2r:.3f} (code {mine.sdlogj_code:.3f}), largest of the others "
            f"{top:.3f} (limit ×{claim['factor']:g}); folding {mine.neg_jac_percent:.2f} % of voxels "
            f"(limit {claim['max_folding']:g} %)"
        )
        return (HOLDS if ok else FAILS), ev, {}
    if kind in ("slower", "fastest_least_accurate"):
        mes = _resolve(claim.get("row") or claim["rows"], rows)
        others = _resolve(claim["others"], rows)

        def get(r):
            return table.loc[(key, r["label"])] if (key, r["label"]) in table.index else None

        def ran(r):
            return get(r) is not None and get(r).status == "ok"

        absent = [r["label"] for r in mes if not ran(r)]
        if absent:
            return UNTESTABLE, f"{', '.join(absent)} did not run", {}
        skipped = [r["label"] for r in others if not ran(r)]
        others = [r for r in others if ran(r)]
        if not others:
            return UNTESTABLE, f"{', '.join(skipped)} did not run", {}
        ev = "; ".join(
            f"{r['label']} {get(r).t_inf:.2f} s, Dice {get(r).dice_mean:.1f}" for r in mes + others
        )
        if skipped:
            ev += f"; not run, so not compared: {', '.join(skipped)}"
        devices = {get(r).device for r in mes + others}
        ev += f" (devices: {', '.join(sorted(devices))})"
        if kind == "slower":
            ok = all(get(m).t_inf > get(o).t_inf for m in mes for o in others)
        else:
            ok = all(
                get(m).t_inf < get(o).t_inf and get(m).dice_mean < get(o).dice_mean
                for m in mes
                for o in others
            )
        return (HOLDS if ok else FAILS), ev, {}
    if kind in ("curve_gap", "curve_exceeds_final"):
        me, other = _resolve(claim["row"], rows)[0], _resolve(claim["other"], rows)[0]
        curves = {}
        for r in (me, other):
            files = [f for f in logs.get(r["label"], []) if Path(f).is_file()]
            if not files:
                return UNTESTABLE, f"{r['label']} did not train", {}
            c = (
                pd.concat([pd.read_csv(f) for f in files]).groupby("iteration")["val_dice"].mean()
                * 100
            )
            curves[r["label"]] = c
        at = int(claim["at"])
        length = min(int(c.index.max()) for c in curves.values())
        if length < at:
            return (
                UNTESTABLE,
                f"training ran {length} iterations; the claim is about iteration {at}",
                {},
            )

        def value(c):
            return float(c.iloc[int(np.abs(np.asarray(c.index) - at).argmin())])

        a, b = curves[me["label"]], curves[other["label"]]
        if kind == "curve_gap":
            gap = value(a) - value(b)
            ev = f"gap {gap:+.2f} points at iteration {at}" + (
                f" (paper {claim['paper']:+.2f})" if claim.get("paper") is not None else ""
            )
            return (HOLDS if gap > 0 else FAILS), ev, {"effect": gap}
        ok = value(a) > float(b.iloc[-1])
        ev = f"{me['label']} {value(a):.2f} at iteration {at}, {other['label']} final {float(b.iloc[-1]):.2f}"
        return (HOLDS if ok else FAILS), ev, {}
    raise ValueError(f"claim {claim['id']}: unknown kind '{kind}'")


def per_structure(structure_csvs, spec: dict) -> pd.DataFrame:
    """Mean Dice per structure (over pairs where it is present, seeds averaged) of the
    claims' row and other, and the change."""
    frames = [pd.read_csv(p, dtype={"fixed": str, "moving": str}) for p in structure_csvs]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    row, other = spec["row"], spec["other"]
    out = []
    for ds in spec["datasets"]:
        if df.empty:
            break
        sub = df[(df.dataset == ds["key"]) & (df.present.astype(bool))]

        a, b = (_structure_means(sub, r) for r in (row, other))
        for name in a.index.intersection(b.index):
            out.append(
                {
                    "dataset": ds["display"],
                    "structure": name,
                    "row": a[name],
                    "other": b[name],
                    "change": a[name] - b[name],
                }
            )
    return pd.DataFrame(out, columns=["dataset", "structure", "row", "other", "change"])


def _structure_means(sub: pd.DataFrame, r: dict) -> pd.Series:
    s = sub[(sub.method == r["method"]) & (sub.variant == r["variant"])]
    return s.groupby("structure")["dice"].mean() * 100


def _structure_figure(table: pd.DataFrame, spec: dict, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dss = list(dict.fromkeys(table.dataset)) or ["(no data)"]
    fig, axes = plt.subplots(
        1,
        len(dss),
        figsize=(4.8 * len(dss), 0.28 * max(8, len(table) / len(dss)) + 1.2),
        squeeze=False,
    )
    for ax, ds in zip(axes[0], dss, strict=True):
        t = table[table.dataset == ds].sort_values("change")
        ax.barh(t.structure, t.change, color=["C3" if c < 0 else "C2" for c in t.change])
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_title(ds, fontsize=9)
        ax.set_xlabel(f"Dice change, {spec['row_label']} − {spec['other_label']} (points)")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=130)
    plt.close(fig)


def write_claims(
    spec: dict, metrics, structures, logs: dict, manifests: dict, out_dir
) -> pd.DataFrame:
    out_dir = Path(out_dir)
    df = load_pair_metrics(metrics, expected_pairs(manifests))
    if "not_run" in df.columns:
        df = df[df.not_run.isna() | (df.not_run.astype(str) == "")]
    cache: dict = {}
    rows = []
    for claim in spec["claims"]:
        for rec in evaluate(claim, spec, df, logs, cache):
            rows.append({"id": claim["id"], "claim": claim["text"], "where": claim["where"], **rec})
    table = pd.DataFrame(rows)
    write_csv(out_dir / "claims.csv", table)
    ps = per_structure(structures, spec["per_structure"])
    write_csv(out_dir / "per_structure.csv", ps)
    _structure_figure(ps, spec["per_structure"], out_dir / "per_structure.png")
    write_text(out_dir / "claims.md", to_markdown(layout(table, ps, spec)))
    return table


def layout(table: pd.DataFrame, ps: pd.DataFrame, header: dict) -> dict:
    """What the claims page shows, for every format (its Markdown, the HTML report): the
    title, the run's scale, the claims with their verdicts and the per-structure change.
    ``header``: ``scale`` and ``per_structure`` (its row labels) of the claims spec."""
    counts = table.verdict.value_counts() if len(table) else pd.Series(dtype=int)
    labels = header["per_structure"]
    return {
        "title": "The paper's claims, checked",
        "caption": header["scale"],
        "blocks": [
            {
                "heading": None,
                "columns": ["claim", "where", "dataset", "verdict", "evidence"],
                "rows": [
                    [
                        str(r.claim),
                        str(r.where),
                        str(r.dataset),
                        f"**{r.verdict}**",
                        str(r.evidence),
                    ]
                    for r in table.itertuples()
                ],
                "note": "Verdicts: "
                + ", ".join(f"{counts.get(v, 0)} {v}" for v in (HOLDS, FAILS, UNTESTABLE))
                + ".\n\nEffects are differences of mean Dice in points with a 95 % interval from "
                "a bootstrap that resamples scans (inter-patient pairs) or patients (longitudinal "
                "pairs), per-pair values averaged over training seeds; p: Wilcoxon signed-rank, "
                "Holm-corrected over a claim's comparisons (docs/results.md).",
            },
            {
                "heading": f"Per structure: {labels['row_label']} − {labels['other_label']}",
                "columns": [
                    "dataset",
                    "structure",
                    labels["row_label"],
                    labels["other_label"],
                    "change",
                ],
                "rows": [
                    [
                        str(r.dataset),
                        str(r.structure),
                        f"{r.row:.1f}",
                        f"{r.other:.1f}",
                        f"{r.change:+.1f}",
                    ]
                    for r in ps.itertuples()
                ],
                "empty": "Not available: one of the two rows did not run.",
            },
        ],
        "note": "",
    }


def to_markdown(view: dict) -> str:
    """The Markdown of a claims :func:`layout`."""
    lines = [f"# {view['title']}", "", view["caption"], ""]
    for block in view["blocks"]:
        if block["heading"]:
            lines += [f"## {block['heading']}", ""]
        if block["rows"] or "empty" not in block:
            lines.append("| " + " | ".join(block["columns"]) + " |")
            lines.append("|---|" + "---|" * (len(block["columns"]) - 1))
            lines += ["| " + " | ".join(cells) + " |" for cells in block["rows"]]
        else:
            lines.append(block["empty"])
        if block.get("note"):
            lines += ["", block["note"], ""]
    return "\n".join(lines) + "\n"


def read_claims(claims_csv) -> tuple[pd.DataFrame, pd.DataFrame]:
    """claims.csv and the per_structure.csv beside it, as :func:`write_claims` wrote them."""
    path = Path(claims_csv)
    for f in (path, path.with_name("per_structure.csv")):
        if not f.is_file():
            raise InputError(f, "claims data missing (the claims step writes it)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    ps = pd.read_csv(path.with_name("per_structure.csv"), dtype={"dataset": str, "structure": str})
    return table, ps
