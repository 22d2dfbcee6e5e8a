"""deedsBCV (Heinrich et al.), the newer DEEDs, built from a source checkout the user gives.

deedsBCV is MIT-licensed C++ on GitHub (``mattiaspaul/deedsBCV``) with no package;
``methods.deeds.params.implementation: deedsbcv`` selects it in place of the
TMI-2013 DEEDs of ``quantiphyse-deeds``, and ``params.deedsbcv.source`` names the
checkout (the pipeline's ``build_tool`` rule compiles it once, with the
compiler flags of its Makefile) or ``params.deedsbcv.bin_dir`` a folder with
``deedsBCV`` (and ``linearBCV``) already built.

What the tool writes, read from its sources (``deedsBCV0.cpp``, ``dataCostD.h``):

* ``<stem>_displacements.dat``: float32, three blocks (u, v, w) of the last
  level's control grid (m1, n1, o1) = (m // s, n // s, o // s) for grid spacing s,
  each block with the first NIfTI axis fastest;
* the dense field is the trilinear upsampling of that grid, sampled at
  ``i · m1 / m`` (indices clamped at the border);
* a fixed voxel (i, j, k) then looks up the moving image at
  ``A·(i, j, k, 1) + (v, u, w)`` — v moves axis 0, u axis 1, w axis 2 — where
  A is the affine matrix of ``linearBCV`` (``-A``; identity without it), whose
  text file holds A transposed (row r of the file is column r of A);
* ``<stem>_deformed_seg.nii.gz``: the moving labels at the rounded position,
  indices clamped at the border.

The Learn2Reg field is therefore ``A·p + (v, u, w) − p``, in voxels of the fixed
grid; the test runs the real tool and checks its own warped labels against it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from corereg import not_run
from corereg.baselines import run_binary
from corereg.errors import CoreregError, InputError, ToolMissing
from corereg.io import TOOL, atomic_dir

SOURCES = {"deedsBCV": "src/deedsBCV0.cpp", "linearBCV": "src/linearBCV.cpp"}
BUILD_RECORD = "build.json"
NOT_RUN = "not_run.json"


# ----------------------------------------------------------------------------- build
def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def compile_flags() -> list[str]:
    """The flags of deedsBCV's Makefile: -O3 -fopenmp, plus -mavx2 -msse4.2 where the CPU has
    them (its ``SLOW=1`` build otherwise)."""
    flags = ["-std=c++11", "-O3", "-fopenmp"]
    have = cpu_flags()
    if platform.machine() in ("x86_64", "AMD64") and {"avx2", "sse4_2"} <= have:
        flags += ["-mavx2", "-msse4.2"]
    return flags


def source_digest(source: Path) -> str:
    h = hashlib.sha256()
    for path in sorted((source / "src").glob("*")):
        if path.suffix in (".cpp", ".h") and path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def check_source(source) -> Path:
    source = Path(source).expanduser()
    if not source.is_dir():
        raise InputError(
            source,
            "deedsBCV source: not a directory (give a checkout of github.com/mattiaspaul/deedsBCV)",
        )
    for rel in SOURCES.values():
        if not (source / rel).is_file():
            raise InputError(
                source / rel, "deedsBCV source: file missing (is this a deedsBCV checkout?)"
            )
    return source.resolve()


def build(source, out_dir, cxx: str | None = None) -> Path:
    """Compile deedsBCV and linearBCV from ``source`` into ``out_dir`` (written whole or not
    at all), with a ``build.json`` naming the source, its digest and the compiler."""
    source = check_source(source)
    cxx = cxx or os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise ToolMissing(
            "deeds", f"no C++ compiler '{cxx}' to build deedsBCV (install g++ and zlib1g-dev)"
        )
    flags = compile_flags()
    with atomic_dir(out_dir, TOOL) as tmp, tempfile.TemporaryDirectory() as scratch:
        # build from a copy: the user's checkout is only read
        src = Path(scratch) / "deedsBCV"
        shutil.copytree(source / "src", src / "src")
        for name, rel in SOURCES.items():
            cmd = [
                cxx,
                str(src / rel),
                "-I",
                str(src / "src"),
                "-o",
                str(tmp / name),
                *flags,
                "-lz",
            ]
            print("[build] " + " ".join(cmd), flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                log = (proc.stderr or proc.stdout).strip()
                if "zlib.h" in log:
                    raise ToolMissing(
                        "deeds", "deedsBCV needs the zlib headers to build (install zlib1g-dev)"
                    )
                tail = " / ".join(log.splitlines()[-4:])
                raise CoreregError(
                    f"building {name} from {source / rel} failed (exit {proc.returncode}): {tail}"
                )
        version = subprocess.run(
            [cxx, "--version"], capture_output=True, text=True
        ).stdout.splitlines()
        record = {
            "source": str(source),
            "sha256_of_sources": source_digest(source),
            "compiler": cxx,
            "compiler_version": version[0] if version else "",
            "flags": flags,
        }
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        if commit.returncode == 0:
            record["git_commit"] = commit.stdout.strip()
        (tmp / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return Path(out_dir)


def write_not_run(out_dir, reason: str) -> None:
    not_run.write_record(Path(out_dir) / NOT_RUN, reason, step="build")


def binaries(bin_dir, source=None) -> dict[str, Path]:
    """The built tools in ``bin_dir``; ToolMissing with the recorded reason for a build that
    could not run here."""
    if bin_dir is None:
        if source:  # the workflow builds it and passes bin_dir; a direct call has to build first
            raise CoreregError(
                f"deeds: params.deedsbcv.source is compiled by the workflow's build_deedsbcv rule; "
                f"outside the workflow run `corereg build-deedsbcv --source {source} --out DIR` "
                "and give params.deedsbcv.bin_dir DIR"
            )
        raise CoreregError("deeds: implementation deedsbcv needs params.deedsbcv.source or bin_dir")
    bin_dir = Path(bin_dir)
    if (bin_dir / NOT_RUN).is_file():
        raise ToolMissing("deeds", not_run.reason_of_record(bin_dir / NOT_RUN))
    tools = {name: bin_dir / name for name in SOURCES}
    if not tools["deedsBCV"].is_file():
        raise InputError(
            tools["deedsBCV"],
            "deedsBCV binary missing (build it from a source checkout: params.deedsbcv.source)",
        )
    return tools


# ----------------------------------------------------------------------------- field
def read_matrix(path) -> np.ndarray:
    """linearBCV's ``_matrix.txt`` as the 4×4 voxel map A (fixed voxel -> moving voxel)."""
    try:
        rows = [
            [float(v) for v in line.split()]
            for line in Path(path).read_text().splitlines()
            if line.strip()
        ]
        mat = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise InputError(path, f"not a 4x4 matrix of numbers ({exc})") from None
    if mat.shape != (4, 4):
        raise InputError(path, f"expected a 4x4 matrix, found shape {mat.shape}")
    return mat.T  # the file holds A transposed


def _upsample_axis(coarse_len: int, fine_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.arange(fine_len) * (coarse_len / fine_len)  # i / (m / m1), as the tool computes it
    lo = np.floor(pos).astype(np.int64)
    frac = pos - lo
    return np.clip(lo, 0, coarse_len - 1), np.clip(lo + 1, 0, coarse_len - 1), frac


def upsample(coarse: np.ndarray, shape) -> np.ndarray:
    """Separable trilinear upsampling of one coarse component to ``shape``, the tool's way."""
    out = coarse.astype(np.float64)
    for axis, fine in enumerate(shape):
        lo, hi, frac = _upsample_axis(out.shape[axis], fine)
        a, b = np.take(out, lo, axis=axis), np.take(out, hi, axis=axis)
        w = frac.reshape([-1 if d == axis else 1 for d in range(out.ndim)])
        out = a * (1 - w) + b * w
    return out


def read_displacements(path, shape, grid_spacing: int) -> np.ndarray:
    """The control-grid displacements (3, m1, n1, o1) of ``<stem>_displacements.dat``."""
    m1, n1, o1 = (int(s) // int(grid_spacing) for s in shape)
    data = np.fromfile(path, dtype="<f4")
    if data.size != 3 * m1 * n1 * o1:
        raise InputError(
            path,
            f"{data.size} values, expected 3 x {m1} x {n1} x {o1} for an image of shape "
            f"{tuple(shape)} and a last grid spacing of {grid_spacing}",
        )
    return data.reshape(3, o1, n1, m1).transpose(0, 3, 2, 1)  # first axis fastest


def to_l2r(uvw_coarse: np.ndarray, shape, matrix: np.ndarray | None = None) -> np.ndarray:
    """Learn2Reg field (m, n, o, 3) from the coarse (u, v, w) and linearBCV's matrix."""
    u, v, w = (upsample(c, shape) for c in uvw_coarse)
    disp = np.stack([v, u, w], axis=-1)
    if matrix is not None:
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(
            np.float64
        )
        disp = disp + grid @ matrix[:3, :3].T + matrix[:3, 3] - grid
    return disp.astype(np.float32)


# ----------------------------------------------------------------------------- running
def _levels(values, name: str) -> list[int]:
    """One value per level, from a list or deedsBCV's own '8x7x6' form."""
    try:
        return [int(v) for v in (values.split("x") if isinstance(values, str) else values)]
    except (TypeError, ValueError):
        raise CoreregError(
            f"deeds: params.deedsbcv.{name} must be a list of integers, got {values!r}"
        ) from None


class Runner:
    """One deedsBCV call (optionally after linearBCV) on arrays; keeps the tool's outputs."""

    def __init__(self, params: dict):
        """``params``: methods.<deeds>.params.deedsbcv (checked; deedsBCV's own defaults
        from the configuration schema for every key left out or null)."""
        from corereg.config import method_params

        given = {k: v for k, v in params.items() if v is not None}
        self.params = method_params("deeds", {"deedsbcv": given}, "deeds params")["deedsbcv"]
        self.levels = {k: _levels(self.params[k], k) for k in ("grid", "search", "quant")}
        if len({len(v) for v in self.levels.values()}) != 1:
            raise CoreregError(
                "deeds: params.deedsbcv grid, search and quant need one value per level each"
            )
        self.tools = binaries(self.params["bin_dir"], self.params["source"])
        if self.params["linear"] and not self.tools["linearBCV"].is_file():
            raise InputError(
                self.tools["linearBCV"], "linearBCV binary missing (params.deedsbcv.linear is true)"
            )
        self.last: dict = {}

    def _run(self, tool: str, args: list[str], threads: int | None) -> None:
        # the tools print errors and may still exit 0: their outputs are checked by the caller
        self.last[f"{tool}_log"] = run_binary("deedsBCV", self.tools[tool], args, threads)

    def register(
        self,
        fixed: np.ndarray,
        moving: np.ndarray,
        affine: np.ndarray,
        workdir=None,
        moving_labels: np.ndarray | None = None,
        threads: int | None = None,
    ) -> np.ndarray:
        p = self.params
        shape = fixed.shape
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            t = Path(tmp)
            for name, arr in (("fixed", fixed), ("moving", moving)):
                nib.save(
                    nib.Nifti1Image(np.asarray(arr, dtype=np.float32), affine), t / f"{name}.nii.gz"
                )
            matrix = None
            extra = [str(a) for a in p["extra"]]
            args = ["-F", str(t / "fixed.nii.gz"), "-M", str(t / "moving.nii.gz")]
            if p["linear"]:
                self._run("linearBCV", [*args, "-O", str(t / "affine")], threads)
                if not (t / "affine_matrix.txt").is_file():
                    raise CoreregError(
                        f"linearBCV wrote no matrix: {self.last.get('linearBCV_log', '')[-300:]}"
                    )
                matrix = read_matrix(t / "affine_matrix.txt")
                args += ["-A", str(t / "affine_matrix.txt")]
            args += ["-O", str(t / "out"), "-a", str(float(p["alpha"]))]
            for flag, key in (("-G", "grid"), ("-L", "search"), ("-Q", "quant")):
                args += [flag, "x".join(map(str, self.levels[key]))]
            args += extra
            if moving_labels is not None:
                nib.save(
                    nib.Nifti1Image(np.asarray(moving_labels, dtype=np.int16), affine),
                    t / "seg.nii.gz",
                )
                args += ["-S", str(t / "seg.nii.gz")]
            self._run("deedsBCV", args, threads)
            dat = t / "out_displacements.dat"
            if not dat.is_file():
                raise CoreregError(
                    f"deedsBCV wrote no displacements: {self.last.get('deedsBCV_log', '')[-300:]}"
                )
            coarse = read_displacements(dat, shape, self.levels["grid"][-1])
            self.last.update(matrix=matrix, coarse=coarse)
            if moving_labels is not None:
                self.last["warped_labels"] = np.asarray(
                    nib.load(t / "out_deformed_seg.nii.gz").dataobj
                )
        return to_l2r(coarse, shape, matrix)
