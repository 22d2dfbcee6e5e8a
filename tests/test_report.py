"""The reproduction report: content from the tiny run, and rendering in headless Chromium."""

import re
import shutil
import subprocess

import pytest

import debian
from conftest import ROOT
from corereg.workflow.compute_plan import jobs_per_rule
from corereg.workflow.jobs import Plan


def chromium() -> str | None:
    """The Chromium binary; installs Debian's package when missing and allowed (root + apt-get)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if not debian.can_install():
        return None
    debian.install(["chromium"])
    return shutil.which("chromium")


def test_report_holds_every_table_figure_and_the_provenance(tiny_run):
    page = (tiny_run / "results" / "report" / "index.html").read_text()
    for title in (
        "Table 1: comparison",
        "Table 2: loss ablation",
        "Table 3: augmentation",
        "Figure 3",
        "Figure 4a",
        "Figure 4b",
    ):
        assert title in page, title
    assert page.count("data:image/png;base64,") == 3
    # paper column, our value, the difference and the p-values come from the tables
    assert "<th>paper</th>" in page and "<th>Δ</th>" in page and "p (Holm)" in page
    # dataset counts beside the paper's, seeds, switches in force, versions, compute per rule
    assert (
        "train pairs" in page
        and "test pairs" in page
        and "test pairs 45" in page
        and "train pairs 190" in page
    )
    assert "Seeds of trainable methods: 1 (0)." in page
    assert "<code>cl_weight_schedule</code>" in page and "<code>core/alpha_5</code>" in page
    assert re.search(r"<td>torch</td><td[^>]*>2\.13\.0", page)
    for rule in ("train", "register", "evaluate", "prepare"):
        assert f"<td>{rule}</td>" in page
    assert "Total GPU-hours" in page
    # folding and both SDlogJ formulas per row, from the tables' data
    assert "Deformation regularity" in page and "<th>% det J ≤ 0</th>" in page
    assert "<th>SDlogJ L2R</th>" in page and "<th>reg_fac search</th>" in page


def test_claims_page_and_its_report_section_come_from_the_claims_data(tiny_run):
    """claims.md and the report's claims section are two renderings of claims.csv and
    per_structure.csv: the Markdown rebuilt from the CSVs is the file the step wrote."""
    from corereg import config
    from corereg.report.claims import layout, read_claims, to_markdown

    folder = tiny_run / "results" / "claims"
    table, ps = read_claims(folder / "claims.csv")
    cfg = config.load(ROOT / "config.yaml", [ROOT / "workflow/presets/tiny.yaml"])
    cfg["results"] = str(tiny_run / "results")
    view = layout(table, ps, Plan(cfg).claims_header())
    assert to_markdown(view) == (folder / "claims.md").read_text()
    page = (tiny_run / "results" / "report" / "index.html").read_text()
    section = page[page.index('<section id="claims">') :]
    section = section[: section.index("</section>")]
    assert section.count("<tr>") == len(table) + len(ps) + 2  # + the two header rows
    assert "Verdicts: " in section and "Per structure: " in section


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium and it cannot be installed here (needs root and apt-get)")
    page = tiny_run / "results" / "report" / "index.html"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout
    total = re.search(r'data-images-total="(\d+)"', dom)
    rendered = re.search(r'data-images-rendered="(\d+)"', dom)
    tables = re.search(r'data-tables="(\d+)"', dom)
    assert total and rendered and tables, dom[:2000]
    assert int(total.group(1)) == 3 and int(rendered.group(1)) == 3  # every figure decoded
    assert int(tables.group(1)) >= 6  # Tables 1 and 3 have two dataset blocks each in tiny
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'p2'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=180,
    )
    assert shot.is_file() and shot.stat().st_size > 20_000  # a page with content, not a blank one


def test_plan_counts_match_the_dry_run_and_the_estimate_prints(tmp_path):
    import yaml

    from conftest import ROOT, run_cli

    plan = Plan(yaml.safe_load((ROOT / "config.yaml").read_text()))
    jobs = jobs_per_rule(plan)
    assert jobs["train"] == 78 and jobs["register"] == 88 and jobs["evaluate"] == 88
    assert (
        jobs["label"] == 1
        and jobs["download"] == 2
        and jobs["convert"] == 1
        and jobs["weights"] == 1
    )
    out = run_cli("plan")
    assert out.returncode == 0, out.stderr
    assert "GPU-hours" in out.stdout and "every field GB" in out.stdout
    assert re.search(r"\btrain\s+78\b", out.stdout)
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: {cl_views: sideways}\n")
    out = run_cli("plan", "--configfile", bad)
    assert out.returncode == 1 and out.stderr.strip().startswith("error: config.yaml + ")
    assert "bad.yaml: engine.cl_views: 'sideways' is not one of" in out.stderr


def test_snakemakes_own_report_holds_every_table_and_figure_with_its_caption(tiny_run, tmp_path):
    import zipfile

    from conftest import run_snakemake

    out = tmp_path / "report.zip"
    run_snakemake(
        "--report",
        str(out),
        "--profile",
        "profiles/demo",
        "--configfile",
        "workflow/presets/tiny.yaml",
        "--config",
        f"results={tiny_run}/results",
        f"data_root={tiny_run}/data",
    )
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        text = "\n".join(
            zf.read(n).decode("utf-8", "replace")
            for n in names
            if n.endswith((".html", ".js", ".json"))
        )
    for name in ("table1.csv", "table2.csv", "table3.csv", "fig3.png", "fig4a.png", "fig4b.png"):
        assert any(n.endswith(name) for n in names), name
    assert "of the paper, reproduced" in text  # the captions of workflow/report/
    assert "Tables" in text and "Figures" in text  # the categories


@pytest.mark.parametrize(
    "presets, targets",
    [
        ([], []),
        (["workflow/presets/demo.yaml"], []),
        ([], ["table2"]),
        (["workflow/presets/demo.yaml"], ["claims", "fig3"]),
    ],
    ids=["paper", "demo", "paper-table2", "demo-claims-fig3"],
)
def test_the_plan_counts_the_jobs_snakemake_plans(presets, targets):
    from conftest import ROOT, run_snakemake
    from corereg import config

    plan = Plan(config.load(ROOT / "config.yaml", [ROOT / p for p in presets]))
    jobs = jobs_per_rule(plan, targets or None)
    args = ["-n", "--forceall", *targets, *(["--configfile", *presets] if presets else [])]
    out = run_snakemake(*args).stdout
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1], re.M))
    assert sum(jobs.values()) == int(stats.pop("total"))
    report = sum(int(stats.pop(r, 0)) for r in ("table", "figure", "claims", "report_html"))
    assert jobs.pop("report", 0) == report
    named = sum(
        int(stats.pop(t, 0)) for t in ("table1", "table2", "table3", "fig3", "fig4a", "fig4b")
    )
    assert jobs.pop("all", 0) == int(stats.pop("all", 0)) + named
    assert jobs == {rule: int(n) for rule, n in stats.items()}
