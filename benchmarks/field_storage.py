"""Benchmark: what int16 field storage (config fields.storage) changes in the scores.

    python benchmarks/field_storage.py results/demo   # a run made with fields.keep: all

Every kept float32 field is written as int16 with the NIfTI scale factor, read back and
scored again; prints the largest change of the per-pair Dice (points), SDlogJ (Learn2Reg
and code) and HD95 over all pairs and methods, the largest displacement error in voxels,
and the size ratio of the files.  Not a test: run by a person on the results at hand.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from corereg.data.manifest import field_name, load_manifest
from corereg.evaluation import evaluate_pair
from corereg.io import load_field, save_field


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path, help="a results folder whose fields/ were kept")
    ap.add_argument("--data-root", type=Path, help="default: RESULTS/data")
    a = ap.parse_args()
    data_root = a.data_root or a.results / "data"
    worst = {"dice": 0.0, "sdlogj_l2r": 0.0, "sdlogj_code": 0.0, "hd95": 0.0, "voxels": 0.0}
    sizes = [0, 0]
    n = 0
    for run in sorted((a.results / "fields").glob("*/*/*/seed*")):
        dataset = run.relative_to(a.results / "fields").parts[0]
        m = load_manifest(data_root / dataset / "prepared")
        labels = sorted(m.labels)
        with tempfile.TemporaryDirectory() as tmp:
            for p in m.pairs("test"):
                path = run / field_name(p["fixed"], p["moving"])
                if not path.is_file():
                    continue
                disp = load_field(path)
                if not np.any(disp):
                    continue  # the identity (Initial): nothing to quantise
                small = Path(tmp) / path.name
                save_field(small, disp, np.eye(4), storage="int16")
                back = load_field(small)
                f32 = Path(tmp) / ("f32_" + path.name)
                save_field(f32, disp, np.eye(4))
                sizes[0] += f32.stat().st_size
                sizes[1] += small.stat().st_size
                fl, ml = m.load_labels(p["fixed"]), m.load_labels(p["moving"])
                _, s32 = evaluate_pair(fl, ml, disp, labels, m.spacing)
                _, s16 = evaluate_pair(fl, ml, back, labels, m.spacing)
                worst["dice"] = max(worst["dice"], 100 * abs(s32["dice"] - s16["dice"]))
                worst["hd95"] = max(worst["hd95"], abs(s32["hd95"] - s16["hd95"]))
                worst["sdlogj_l2r"] = max(
                    worst["sdlogj_l2r"], abs(s32["sdlogj_l2r"] - s16["sdlogj_l2r"])
                )
                worst["sdlogj_code"] = max(
                    worst["sdlogj_code"], abs(s32["sdlogj_code"] - s16["sdlogj_code"])
                )
                worst["voxels"] = max(worst["voxels"], float(np.abs(back - disp).max()))
                n += 1
    if not n:
        raise SystemExit(f"no kept fields under {a.results}/fields (run with fields.keep: all)")
    print(f"{n} fields; int16 files are {sizes[1] / sizes[0]:.2f} of the float32 ones (gzip)")
    print(f"largest displacement error: {worst['voxels']:.2e} voxels")
    print(f"largest change: Dice {worst['dice']:.4f} points, HD95 {worst['hd95']:.4f} mm, ")
    print(f"  SDlogJ (L2R) {worst['sdlogj_l2r']:.2e}, SDlogJ (code) {worst['sdlogj_code']:.2e}")


if __name__ == "__main__":
    main()
