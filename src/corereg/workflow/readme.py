"""The README's numbers, written from the files the pipeline produces so they cannot go
stale: the example Table 1 (from ``results/example/table1.md``), the demo's job count
(``corereg plan`` of the demo preset), the jobs of ``table2`` and the paper run's compute
table (``corereg plan`` of ``config.yaml``).  Each sits between ``<!-- generated: NAME -->`` and
``<!-- /generated -->`` in README.md; ``corereg example readme`` rewrites them and a test
fails when the README differs from what they would be now.
"""

from __future__ import annotations

import re
from pathlib import Path

START, END = "<!-- generated: {} -->", "<!-- /generated -->"


def example_table(example: Path) -> str:
    """The first dataset block of the committed example Table 1, as it stands there."""
    text = (example / "table1.md").read_text()
    block = text.split("\n## ", 2)[1]
    heading, rest = block.split("\n", 1)
    rows = [line for line in rest.strip().splitlines() if line.startswith("|")]
    return f"Table 1 of the demo, {heading} (`results/example/table1.md`):\n\n" + "\n".join(rows)


def demo_jobs(root: Path) -> str:
    from corereg import config
    from corereg.workflow.compute_plan import jobs_per_rule
    from corereg.workflow.jobs import Plan

    plan = Plan(config.load(root / "config.yaml", [root / "workflow/presets/demo.yaml"]))
    n = sum(jobs_per_rule(plan).values())
    return f"The demo is {n} jobs (`corereg plan --configfile workflow/presets/demo.yaml`)."


def _paper_plan(root: Path):
    from corereg import config
    from corereg.workflow.jobs import Plan

    return Plan(config.load(root / "config.yaml", []))


def table2_jobs(root: Path) -> str:
    from corereg.workflow.compute_plan import jobs_of_rules

    jobs = jobs_of_rules(_paper_plan(root), ["table2"])
    n, trainings = sum(len(j) for j in jobs.values()), len(jobs["train"])
    return (
        f"`table2`, for example, is {n} jobs, {trainings} of them trainings (Bigalke et al., CoRe"
        " and its `cl_only` variant on both datasets, three seeds each), with the RAD-ChestCT"
        " download and its TotalSegmentator labels."
    )


def _basis(text: str) -> str:
    parts = []
    if "measured cpu" in text:
        parts.append("measured on the CPU")
    if "ratio" in text:
        parts.append("GPU estimated from the paper's T_inf")
    if "not measured" in text:
        parts.append("some methods not measured")
    return "; ".join(parts) or text


def _gb(mb) -> str:
    return "–" if not isinstance(mb, (int, float)) else f"{mb / 1000:.1f} GB"


def compute_table(root: Path) -> str:
    """Jobs, predicted hours and peak memory of the paper run per rule, as `corereg plan`
    prints them, and its disk line."""
    from corereg.workflow.compute_plan import disk_use, estimate

    plan = _paper_plan(root)
    jobs, dsk = estimate(plan)
    lines = ["| rule | jobs | predicted hours (of them on a GPU) | peak memory per job | basis |"]
    lines.append("|---|---|---|---|---|")
    for _, r in jobs.iterrows():
        if r["rule"] not in ("prepare", "train", "register", "evaluate"):
            continue
        hours = r["predicted h"]
        pred = (
            "not measured"
            if hours == "–"
            else f"{float(hours):,.0f} h ({float(r['GPU-h']):,.0f} GPU-h)"
        )
        lines.append(
            f"| {r['rule']} | {r['jobs']} | {pred} | {_gb(r['peak MB (max)'])} | {_basis(r['basis'])} |"
        )
    disk = disk_use(plan, dsk)
    lines += [
        "",
        f"Disk: {disk['total']:,.0f} GB before gzip, of it {disk['images']:,.0f} GB prepared"
        f" scans and the trainings' scan cache and {disk['checkpoints']:,.0f} GB checkpoints and"
        " pseudo-labels, the rest fields (kept for the figures; every field: "
        f"{disk['every_float32']:,.0f} GB); raw downloads on top.",
    ]
    return "\n".join(lines)


def blocks(root: Path) -> dict[str, str]:
    return {
        "example-table1": example_table(root / "results/example"),
        "demo-jobs": demo_jobs(root),
        "table2-jobs": table2_jobs(root),
        "compute": compute_table(root),
    }


def render(readme: str, new: dict[str, str]) -> str:
    """``readme`` with each generated block replaced by ``new``'s text."""
    for name, text in new.items():
        pattern = re.compile(re.escape(START.format(name)) + r"\n.*?\n" + re.escape(END), re.DOTALL)
        if not pattern.search(readme):
            raise ValueError(f"README.md has no block '{name}'")
        block = f"{START.format(name)}\n{text}\n{END}"
        readme = pattern.sub(lambda _m, b=block: b, readme)
    return readme


def update(root: Path) -> Path:
    path = root / "README.md"
    path.write_text(render(path.read_text(), blocks(root)))
    return path
