"""The reproduction report: one self-contained HTML page (``snakemake report``).

Every table (the paper's values, ours, the difference and the p-values, as in
``tables/*.md``), every figure (embedded PNG), the dataset counts, the seeds, the
fidelity switches in force (every engine key, with the methods' and variants'
overrides), software versions, the devices that ran each step, and compute time
per rule from Snakemake's benchmark files (GPU-hours for rules that hold a GPU).
"""

from __future__ import annotations

import base64
import html
import json
import platform
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path

import pandas as pd

from corereg.errors import InputError
from corereg.io import atomic_path, benchmark_seconds
from corereg.report.tables import layout, read_table

PACKAGES = (
    "corereg",
    "torch",
    "snakemake",
    "numpy",
    "scipy",
    "pandas",
    "nibabel",
    "matplotlib",
    "convexadam",
    "surface-distance",
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.7em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:left}th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:.9em}
.note{color:#444;font-size:.9em}code{background:#f4f4f4;padding:0 .2em}nav a{margin-right:1em}
"""

# Marks the page as fully rendered once every image has decoded (checked by the tests).
CHECK_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', imgs.length);
  document.body.setAttribute('data-images-rendered', ok);
  document.body.setAttribute('data-tables', document.querySelectorAll('table.result').length);
});
"""


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _cell(text: str, tag: str = "td") -> str:
    numeric = tag == "td" and re.match(r"^[-+]?[\d.]", text)
    return (
        f'<{tag} class="num">{_inline(text)}</{tag}>'
        if numeric
        else f"<{tag}>{_inline(text)}</{tag}>"
    )


def _result_table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(_cell(c, "th") for c in head)
    body = ["<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in rows]
    return "\n".join(
        [f'<table class="result"><thead><tr>{cells}</tr></thead><tbody>', *body, "</tbody></table>"]
    )


def layout_to_html(view: dict) -> str:
    """A page section from its layout (:func:`corereg.report.tables.layout` of a paper
    table, :func:`corereg.report.claims.layout` of the claims): the same cells as its
    Markdown, built from the data.  A block may lack a heading, carry a ``note`` and an
    ``empty`` text shown when it has no rows."""
    out = [f"<h2>{_inline(view['title'])}</h2>"]
    if view["caption"]:
        out.append(f'<p class="note">{_inline(view["caption"])}</p>')
    for block in view["blocks"]:
        if block["heading"]:
            out.append(f"<h3>{_inline(block['heading'])}</h3>")
        if block["rows"] or "empty" not in block:
            out.append(_result_table(block["columns"], block["rows"]))
        else:
            out.append(f"<p>{_inline(block['empty'])}</p>")
        for para in (block.get("note") or "").split("\n\n"):
            if para:
                out.append(f'<p class="note">{_inline(para)}</p>')
    if view["note"]:
        out.append(f'<p class="note">{_inline(view["note"])}</p>')
    return "\n".join(out)


def _table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = "".join(
            f'<td class="num">{html.escape(str(v))}</td>'
            if isinstance(v, int | float)
            else f"<td>{html.escape(str(v))}</td>"
            for v in r
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _regularity(frames: dict[str, pd.DataFrame]) -> str:
    """Per row of every table: both SDlogJ formulas, folding (% of det J <= 0), HD95 and the
    test-time reg_fac with whether its search reached the band, from the tables' CSV data."""
    keep = {
        "row": "row",
        "dataset_label": "dataset",
        "sdlogj_l2r": "SDlogJ L2R",
        "sdlogj_code": "SDlogJ code",
        "neg_jac_percent": "% det J ≤ 0",
        "hd95": "HD95 mm",
        "reg_fac": "reg_fac",
        "reg_fac_status": "reg_fac search",
    }
    parts = []
    for name, df in frames.items():
        df = df[df.status == "ok"]
        if df.empty:
            continue
        df = df[[c for c in keep if c in df.columns]].rename(columns=keep).round(4)
        parts.append(f"<h3>{html.escape(name)}</h3>{_table(df.fillna(''))}")
    return (
        '<section id="regularity"><h2>Deformation regularity and the reg_fac search</h2>'
        "<p class=\"note\">SDlogJ L2R is Learn2Reg's formula, SDlogJ code the released code's (blind "
        "to the first array axis); % det J ≤ 0 is the share of folding voxels; reg_fac search: "
        "in_band, out_of_band (the last round is reported) or off.</p>"
        + ("".join(parts) or "<p>No rows ran.</p>")
        + "</section>"
    )


def _versions() -> pd.DataFrame:
    rows = [{"software": "python", "version": platform.python_version()}]
    for pkg in PACKAGES:
        try:
            rows.append({"software": pkg, "version": metadata.version(pkg)})
        except metadata.PackageNotFoundError:
            rows.append({"software": pkg, "version": "not installed"})
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        commit = ""
    rows.append({"software": "corereg git commit", "version": commit or "unknown"})
    return pd.DataFrame(rows)


def compute_usage(results: Path, gpu_rules: dict[str, int]) -> pd.DataFrame:
    """Jobs, wall hours and GPU-hours per rule from ``benchmarks/<rule>/**.tsv``."""
    rows = []
    bench = results / "benchmarks"
    for rule_dir in sorted(p for p in bench.iterdir() if p.is_dir()) if bench.is_dir() else []:
        times = benchmark_seconds(rule_dir)
        seconds, jobs = sum(times), len(times)
        gpus = int(gpu_rules.get(rule_dir.name, 0))
        rows.append(
            {
                "rule": rule_dir.name,
                "jobs": jobs,
                "wall h": round(seconds / 3600, 3),
                "GPUs per job": gpus,
                "GPU-hours": round(gpus * seconds / 3600, 3),
            }
        )
    return pd.DataFrame(rows, columns=["rule", "jobs", "wall h", "GPUs per job", "GPU-hours"])


def _devices(results: Path) -> list[str]:
    devices = set()
    for csv in (results / "metrics").rglob("pairs.csv"):
        try:
            devices |= set(pd.read_csv(csv, usecols=["device"])["device"].dropna().astype(str))
        except (ValueError, KeyError):
            continue
    return sorted(devices)


def _datasets(spec: dict) -> pd.DataFrame:
    from corereg.data.manifest import load_manifest

    rows = []
    for key, ds in spec["datasets"].items():
        row = {"dataset": key, "display": ds.get("display", key), "source": ds["source"]["kind"]}
        try:
            m = load_manifest(ds["prepared"])
            for split in ("train", "val", "test"):
                row[f"{split} scans"] = len(m.cases(split))
                row[f"{split} pairs"] = len(m.pairs(split))
            row["shape"] = "×".join(map(str, m.shape))
            pairing = m.meta.get("pairing")
            if pairing:
                row["pairing"] = (
                    f"rule {pairing.get('pair_rule')}, split {pairing.get('split')}, "
                    f"seed {pairing.get('seed')}"
                )
            row["spacing mm"] = "×".join(f"{s:g}" for s in m.spacing)
        except (OSError, InputError):
            row["train pairs"] = "not prepared"
        paper = ds.get("paper_counts")
        if paper:
            row["paper"] = ", ".join(f"{k} {v}" for k, v in paper.items())
        rows.append(row)
    return pd.DataFrame(rows).fillna("–")


def _switches(spec: dict) -> str:
    engine = spec["engine"]
    parts = ["<table><thead><tr><th>engine key</th><th>value in force</th></tr></thead><tbody>"]
    for k in sorted(engine):
        parts.append(
            f"<tr><td><code>{html.escape(k)}</code></td><td>{html.escape(json.dumps(engine[k]))}</td></tr>"
        )
    parts.append("</tbody></table>")
    over = []
    for method, m in spec["methods"].items():
        if m.get("params"):
            over.append(
                f"<li><code>{method}</code>: {html.escape(json.dumps(m['params'], sort_keys=True))}</li>"
            )
        for variant, params in (m.get("variants") or {}).items():
            over.append(
                f"<li><code>{method}/{variant}</code>: {html.escape(json.dumps(params, sort_keys=True))}</li>"
            )
    if over:
        parts.append(
            "<p>Method and variant overrides of the engine keys:</p><ul>" + "".join(over) + "</ul>"
        )
    return "\n".join(parts)


def build_report(
    spec: dict,
    tables: list[str],
    figures: list[str],
    results: str,
    out: str,
    claims: str | None = None,
) -> Path:
    results_dir = Path(results)
    body = [
        f"<h1>{html.escape(spec['title'])}</h1>",
        f'<p class="note">Generated {time.strftime("%Y-%m-%d %H:%M:%S %Z")} from <code>{html.escape(results)}</code>. '
        "Paper columns are the published values; Δ = ours − paper; p: Wilcoxon signed-rank tests against the "
        "reference row, Holm-corrected (see each table's note).</p>",
    ]
    nav = ['<nav><a href="#data">data</a>']
    sections = []
    frames = {}  # each table's data, read once for its section and the regularity section
    for md_path in tables:
        path = Path(md_path)
        csv = path.with_suffix(".csv")
        if not csv.is_file():
            raise InputError(csv, "table data missing (the table step writes it beside the .md)")
        name = path.stem
        if name not in spec["tables"]:
            raise InputError(path, f"the report specification has no table '{name}'")
        frames[name] = read_table(csv)
        view = layout(spec["tables"][name], frames[name], robust=True)
        nav.append(f'<a href="#{name}">{name}</a>')
        sections.append(f'<section id="{name}">{layout_to_html(view)}</section>')
    for png in figures:
        path = Path(png)
        if not path.is_file():
            raise InputError(path, "figure missing")
        data = base64.b64encode(path.read_bytes()).decode()
        title = spec["figure_titles"].get(path.stem, path.stem)
        nav.append(f'<a href="#{path.stem}">{path.stem}</a>')
        sections.append(
            f'<section id="{path.stem}"><h2>{html.escape(title)}</h2><figure>'
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure></section>"
        )
    if claims:
        from corereg.report.claims import layout as claims_layout
        from corereg.report.claims import read_claims

        view = claims_layout(*read_claims(claims), spec["claims"])
        nav.append('<a href="#claims">claims</a>')
        sections.insert(0, f'<section id="claims">{layout_to_html(view)}</section>')
    nav += [
        '<a href="#regularity">regularity</a>',
        '<a href="#switches">fidelity switches</a>',
        '<a href="#compute">compute</a></nav>',
    ]
    seeds = spec["seeds"]
    data = (
        f'<section id="data"><h2>Data and seeds</h2>{_table(_datasets(spec))}'
        f"<p>Seeds of trainable methods: {len(seeds)} ({', '.join(map(str, seeds))}).</p></section>"
    )
    usage = compute_usage(results_dir, spec["gpu_rules"])
    devices = _devices(results_dir)
    compute = (
        f'<section id="compute"><h2>Software and compute</h2>{_table(_versions())}'
        f"<p>Devices that registered test pairs: {html.escape(', '.join(devices) or 'none recorded')}.</p>"
        f"<h3>Time per rule (Snakemake benchmark files)</h3>{_table(usage)}"
        f"<p>Total GPU-hours: {usage['GPU-hours'].sum():.3f}; total wall hours: {usage['wall h'].sum():.3f}.</p>"
        "</section>"
    )
    switches = (
        f'<section id="switches"><h2>Fidelity switches in force</h2>{_switches(spec)}</section>'
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(spec['title'])}</title><style>{CSS}</style>"
        f"<script>{CHECK_JS}</script></head><body>"
        + "\n".join([*body, " ".join(nav), data, *sections, _regularity(frames), switches, compute])
        + "</body></html>\n"
    )
    out_path = Path(out)
    with atomic_path(out_path) as tmp:
        tmp.write_text(page)
    return out_path
