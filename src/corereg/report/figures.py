"""Figures 3, 4a and 4b.  Each writes PNG and PDF; missing runs are labelled "not run"."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from corereg.io import atomic_path
from corereg.report.tables import expected_pairs, load_pair_metrics


def _save(fig, out_prefix) -> None:
    out_prefix = Path(out_prefix)
    for ext in ("png", "pdf"):
        with atomic_path(out_prefix.with_suffix(f".{ext}"), suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
    plt.close(fig)


def _not_run(ax, text="not run", y=0.5):
    ax.text(0.5, y, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def fig4a(spec: dict, pair_csvs, out_prefix, manifests: dict | None = None) -> pd.DataFrame:
    """Dice vs the contrastive weight alpha, one panel per dataset, paper values as markers."""
    df = load_pair_metrics(pair_csvs, expected_pairs(manifests or {}))
    dss = spec["datasets"]
    fig, axes = plt.subplots(1, len(dss), figsize=(4.5 * len(dss), 3.4), squeeze=False)
    rows = []
    for ax, ds in zip(axes[0], dss, strict=True):
        for r in spec["rows"]:
            sel = df[
                (df.dataset == ds["key"])
                & (df.method == r["method"])
                & (df.variant == r["variant"])
            ]
            pp = sel.groupby(["fixed", "moving"])["dice"].mean() * 100 if not sel.empty else None
            paper = (r.get("paper") or {}).get(ds.get("paper_key") or "") or {}
            rows.append(
                {
                    "dataset": ds["key"],
                    "alpha": r["alpha"],
                    "variant": r["variant"],
                    "dice_mean": pp.mean() if pp is not None else np.nan,
                    "dice_std": pp.std(ddof=0) if pp is not None else np.nan,
                    "paper_dice": paper.get("dice", np.nan),
                    "paper_dice_vs_first": paper.get("dice_vs_first", np.nan),
                }
            )
        t = pd.DataFrame([x for x in rows if x["dataset"] == ds["key"]]).sort_values("alpha")
        ok = t.dropna(subset=["dice_mean"])
        if ok.empty:
            _not_run(ax, "reproduced: not run", y=0.85)
        else:
            ax.errorbar(
                ok.alpha, ok.dice_mean, yerr=ok.dice_std, marker="o", capsize=3, label="reproduced"
            )
        pap = t.dropna(subset=["paper_dice"])
        if not pap.empty:
            ax.plot(pap.alpha, pap.paper_dice, "s", color="C3", label="paper (text)")
        _mark_paper_differences(ax, t, ok)
        ax.set_xscale("symlog", linthresh=1)
        alphas = sorted({float(r["alpha"]) for r in spec["rows"]})
        ax.set_xticks(alphas)
        ax.set_xticklabels([f"{a:g}" for a in alphas])
        ax.set_xlim(-0.3, max(alphas) * 1.3 + 0.5)
        ax.set_xlabel("contrastive weight α")
        ax.set_ylabel("Dice (%)")
        ax.set_title(ds["display"])
        if not ok.empty or not pap.empty:
            ax.legend(fontsize=8)
    fig.suptitle(spec["title"], fontsize=10)
    _save(fig, out_prefix)
    return pd.DataFrame(rows)


def _mark_paper_differences(ax, t: pd.DataFrame, ok: pd.DataFrame) -> None:
    """The paper states some points only as a difference to the first (alpha = 0) point:
    drawn as a hollow marker at our alpha = 0 Dice plus the stated difference."""
    stated = t.dropna(subset=["paper_dice_vs_first"])
    if stated.empty or ok.empty or ok.alpha.iloc[0] != t.alpha.iloc[0]:
        return
    base = ok.dice_mean.iloc[0]
    for r in stated.itertuples():
        ax.plot(r.alpha, base + r.paper_dice_vs_first, "s", mfc="none", color="C3")
        ax.annotate(
            f"paper: {r.paper_dice_vs_first:+.2f} vs α = {t.alpha.iloc[0]:g}",
            (r.alpha, base + r.paper_dice_vs_first),
            fontsize=7,
            xytext=(4, -10),
            textcoords="offset points",
            color="C3",
        )


def fig4b(spec: dict, logs: dict[str, list[str]], out_prefix) -> None:
    """Validation Dice over training iterations; ``logs`` maps a row label to train_log.csv files."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    drawn = False
    means = []
    for i, r in enumerate(spec["rows"]):
        files = [f for f in logs.get(r["label"], []) if Path(f).is_file()]
        if not files:
            ax.plot([], [], color=f"C{i}", label=f"{r['label']} (not run)")
            continue
        curves = pd.concat([pd.read_csv(f).assign(run=k) for k, f in enumerate(files)])
        g = curves.groupby("iteration")["val_dice"]
        mean, sd = g.mean() * 100, g.std(ddof=0).fillna(0) * 100
        ax.plot(mean.index, mean.values, color=f"C{i}", label=r["label"])
        ax.fill_between(mean.index, mean - sd, mean + sd, color=f"C{i}", alpha=0.2)
        means.append(mean)
        drawn = True
    if len(means) >= 2:
        _annotate_gap(ax, means[0], means[1], int(spec["iters_per_stage"]))
    _paper_points(ax, spec)
    if not drawn:
        _not_run(ax, "no training run yet")
        ax.set_xlim(0, spec["iterations"])
        ax.set_ylim(0, 100)
    ax.set_xlabel("training iteration")
    ax.set_ylabel("validation Dice (%)")
    ax.set_title(spec["title"], fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, out_prefix)


def _paper_points(ax, spec: dict) -> None:
    """The values the paper's text states for Figure 4b, in red and labelled as the paper's.
    Points on the paper's iteration axis are drawn where this run's schedule reaches them;
    the statement is always printed in the panel."""
    horizon = int(spec["iterations"])
    for ds in spec["datasets"]:
        pv = (spec.get("paper") or {}).get(ds.get("paper_key") or "") or {}
        if not pv:
            continue
        lines = []
        if "gap_at" in pv and "gap" in pv:
            lines.append(f"CoRe − baseline {pv['gap']:+.2f} after {pv['gap_at']} it.")
            if pv["gap_at"] <= horizon:
                ax.axvline(pv["gap_at"], color="C3", lw=0.8, ls=":")
        if "first_at" in pv and "first_dice" in pv:
            lines.append(f"CoRe {pv['first_dice']:.2f} after {pv['first_at']} it.")
            if pv["first_at"] <= horizon:
                ax.plot(pv["first_at"], pv["first_dice"], "s", mfc="none", color="C3")
        if "baseline_final" in pv:
            lines.append(f"baseline final {pv['baseline_final']:.1f}")
            ax.axhline(pv["baseline_final"], color="C3", lw=0.8, ls=":")
        ax.text(
            0.99,
            0.03,
            "paper (text): " + "; ".join(lines),
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=6.5,
            color="C3",
        )


def _annotate_gap(ax, first: pd.Series, second: pd.Series, at: int) -> None:
    """Mark the Dice gap between the first two curves at the end of the first stage."""
    common = first.index.intersection(second.index)
    if common.empty:
        return
    it = common[np.abs(np.asarray(common) - at).argmin()]
    a, b = first[it], second[it]
    ax.annotate("", xy=(it, a), xytext=(it, b), arrowprops={"arrowstyle": "<->", "color": "0.3"})
    ax.text(it, (a + b) / 2, f" Δ {a - b:+.1f} points\n at iteration {it}", fontsize=7, va="center")


def label_cmap(n_labels: int):
    """Distinct colours for neighbouring ids (tab20's pairs are split apart)."""
    from matplotlib.colors import ListedColormap

    base = plt.get_cmap("tab20")(np.r_[0:20:2, 1:20:2])
    extra = plt.get_cmap("Set1")(np.arange(9))
    colours = np.concatenate([base, extra])
    return ListedColormap(colours[: max(n_labels, 2)])


def _overlay(ax, image, labels, window, n_labels, title=None):
    """Radiological display: patient right (array axis 0 increasing, RAS) on the viewer's left."""
    ax.imshow(
        image.T,
        cmap="gray",
        origin="lower",
        vmin=window[0],
        vmax=window[1],
        interpolation="nearest",
    )
    if labels is not None:
        masked = np.ma.masked_where(labels.T == 0, labels.T)
        ax.imshow(
            masked,
            cmap=label_cmap(n_labels),
            vmin=0.5,
            vmax=n_labels + 0.5,
            alpha=0.5,
            origin="lower",
            interpolation="nearest",
        )
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def fig3(panels: list[dict], out_prefix) -> None:
    """Qualitative overlays, per dataset: fixed, fixed+labels, moving labels, warped labels.

    ``panels``: one dict per dataset with keys display, fixed (HU), fixed_lab, moving,
    moving_lab, window, n_labels, methods (list of (label, warped labels or None)),
    spacing.  Two rows per dataset: axial (a0-a1 plane) and coronal (a0-a2 plane).
    """
    ncols = 3 + max(len(p["methods"]) for p in panels)
    fig, axes = plt.subplots(
        2 * len(panels), ncols, figsize=(2.2 * ncols, 4.6 * len(panels)), squeeze=False
    )
    for k, p in enumerate(panels):
        for v, view in enumerate(("axial", "coronal")):
            ax_row = axes[2 * k + v]

            def cut(a, view=view, sl=p["slices"][view]):
                return a[:, :, sl] if view == "axial" else a[:, sl, :]

            aspect = 1.0
            if view == "coronal":
                aspect = p["spacing"][2] / p["spacing"][0]
            elif p["spacing"][1] != p["spacing"][0]:
                aspect = p["spacing"][1] / p["spacing"][0]
            panels_ = [
                (cut(p["fixed"]), None, f"{p['display']}\nfixed ({view})"),
                (cut(p["fixed"]), cut(p["fixed_lab"]), "fixed + labels"),
                (cut(p["moving"]), cut(p["moving_lab"]), "moving + labels"),
            ]
            for name, warped in p["methods"]:
                panels_.append(
                    (
                        cut(p["fixed"]),
                        None if warped is None else cut(warped),
                        f"{name}: warped labels",
                    )
                )
            for j, ax in enumerate(ax_row):
                if j >= len(panels_):
                    ax.axis("off")
                    continue
                _overlay(ax, *panels_[j][:2], p["window"], p["n_labels"], panels_[j][2])
                if j >= 3 and p["methods"][j - 3][1] is None:
                    _not_run(ax)
            for ax in ax_row:
                ax.set_aspect(aspect)
    _save(fig, out_prefix)
