"""The committed example results (``results/example/``) against what the demo writes.

``update`` copies the demo's tables and figures into the example folder (what the
README shows); ``check`` compares the committed Markdown tables with a fresh demo's,
cell by cell, within stated tolerances: the trained rows move by up to about one Dice
point between two CPUs of the same kind (same seeds; floating-point reductions differ
with the vector units and thread count), so an exact match is only expected on the
machine that wrote them.  Run times and p-values are not compared; the paper columns,
row labels, column heads and every non-numeric cell must match exactly.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from corereg.errors import CoreregError
from corereg.io import atomic_path

TABLES = ("table1", "table2", "table3")
FIGURES = ("fig3", "fig4a", "fig4b")


@dataclass(frozen=True)
class Tolerance:
    # wide enough for another CPU: the demo's short CPU trainings of VoxelMorph and LapIRN
    # move most between CPUs of different vector units
    dice: float = 5.0  # Dice points (mean, std and Δ)
    sdlogj: float = 0.03
    hd95: float = 10.0  # mm; the demo's voxels are 8 mm


NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def update(demo: Path, example: Path) -> list[Path]:
    """Copy the demo's tables (Markdown), figures (PNG) and claims into ``example``."""
    demo, example = Path(demo), Path(example)
    sources = [demo / "tables" / f"{t}.md" for t in TABLES]
    sources += [demo / "figures" / f"{f}.png" for f in FIGURES]
    sources += [demo / "claims" / "claims.md", demo / "claims" / "per_structure.png"]
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        raise CoreregError(f"the demo has not written {', '.join(missing)}; run `make demo` first")
    example.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sources:
        dest = example / src.name
        with atomic_path(dest, suffix=src.suffix) as tmp:
            shutil.copyfile(src, tmp)
        out.append(dest)
    return out


def _rows(md: str) -> tuple[dict, list[str]]:
    """{(section, row label): {column head: cell}} of every table block, and the text lines."""
    rows, text, section, heads = {}, [], "", []
    for line in md.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        if not line.startswith("|"):
            text.append(line)
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "Method":
            heads = cells
        elif not set(cells[0]) <= set("-"):
            # the two "paper" columns are told apart by the column before them
            keys = [h if h != "paper" else f"paper ({heads[i - 1]})" for i, h in enumerate(heads)]
            rows[(section, cells[0])] = dict(zip(keys, cells, strict=True))
    return rows, text


def _tolerance(head: str, tol: Tolerance) -> float | None:
    """Allowed difference of a column, or None for columns that are not compared."""
    if head.startswith(("T_inf", "p (")):
        return None
    if head.startswith("paper"):
        return 0.0
    if head.startswith(("Dice", "Δ")):
        return tol.dice
    if head.startswith("SDlogJ"):
        return tol.sdlogj
    if head.startswith("HD95"):
        return tol.hd95
    return 0.0


def compare_table(committed: str, fresh: str, tol: Tolerance = Tolerance()) -> list[str]:
    """Differences between two renderings of one table beyond the tolerances."""
    a, text_a = _rows(committed)
    b, text_b = _rows(fresh)
    problems = []
    if set(a) != set(b):
        problems.append(
            f"rows differ: only committed {sorted(set(a) - set(b))}, "
            f"only fresh {sorted(set(b) - set(a))}"
        )
    for key in sorted(set(a) & set(b)):
        if a[key].keys() != b[key].keys():
            problems.append(f"{key[0]} / {key[1]}: columns differ")
            continue
        for head, cell in a[key].items():
            limit = _tolerance(head, tol)
            other = b[key][head]
            if limit is None or cell == other:
                continue
            na, nb = NUMBER.findall(cell), NUMBER.findall(other)
            same_shape = NUMBER.sub("#", cell) == NUMBER.sub("#", other) and len(na) == len(nb)
            if not same_shape or any(
                abs(float(x) - float(y)) > limit for x, y in zip(na, nb, strict=True)
            ):
                problems.append(
                    f"{key[0]} / {key[1]} / {head}: committed {cell!r}, demo {other!r}"
                    + (f" (tolerance {limit:g})" if limit else "")
                )
    note_a = [t for t in text_a if t.strip()]
    note_b = [t for t in text_b if t.strip()]
    if note_a != note_b:
        problems.append("the title, section heads or the note under the table differ")
    return problems


def check(demo: Path, example: Path, tol: Tolerance = Tolerance()) -> list[str]:
    """Compare every committed table that the demo has written; raises if none can be."""
    demo, example = Path(demo), Path(example)
    compared, problems = 0, []
    for name in TABLES:
        committed, fresh = example / f"{name}.md", demo / "tables" / f"{name}.md"
        if not committed.is_file():
            raise CoreregError(f"{committed}: committed example table missing")
        if not fresh.is_file():
            continue
        compared += 1
        problems += [
            f"{name}: {p}" for p in compare_table(committed.read_text(), fresh.read_text(), tol)
        ]
    if not compared:
        raise CoreregError(f"{demo / 'tables'}: no demo table to compare; run `make demo` first")
    return problems
