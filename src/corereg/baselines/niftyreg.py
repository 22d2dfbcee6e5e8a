"""NiftyReg (Modat et al.): free-form deformation with ``reg_f3d``, the Table 1 setting.

Paper setting: 4 pyramid levels, normalised mutual information, adaptive gradient
descent instead of conjugate gradient (``reg_f3d -ln 4 --nmi -noConj``).  The
control-point grid becomes a dense displacement with ``reg_transform -disp``: a
world-space (mm) vector per reference voxel, converted here to fixed-grid voxels
with the inverse of the images' affine (``A⁻¹ d``), the Learn2Reg convention.

Binaries: the PyPI package ``niftyreg`` (a source build of NiftyReg 1.5.70;
``make`` installs it, which needs ``CMAKE_POLICY_VERSION_MINIMUM=3.5``), or
``reg_f3d`` on PATH, or ``params.bin_dir``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from corereg.baselines import run_binary
from corereg.errors import CoreregError, ToolMissing
from corereg.registration.methods import Method

INSTALL = "CMAKE_POLICY_VERSION_MINIMUM=3.5 pip install niftyreg==1.5.70rc1"


def bin_dir(folder: str | None = None) -> Path:
    """The NiftyReg binaries: ``folder`` (params.bin_dir), else the PyPI package's, else PATH."""
    if folder:
        if not (Path(folder) / "reg_f3d").exists():
            raise CoreregError(f"methods.niftyreg.params.bin_dir: no reg_f3d in {folder}")
        return Path(folder)
    try:
        import niftyreg

        if (Path(niftyreg.bin_path) / "reg_f3d").exists():
            return Path(niftyreg.bin_path)
    except ImportError:
        pass
    found = shutil.which("reg_f3d")
    if found:
        return Path(found).parent
    raise ToolMissing(
        "niftyreg",
        f"NiftyReg is not installed (no reg_f3d): {INSTALL}, or set methods.niftyreg.params.bin_dir",
    )


def run(tool: str, args: list[str], folder: str | None = None, threads: int | None = None) -> None:
    run_binary("NiftyReg", bin_dir(folder) / tool, args, threads)


def world_to_voxel_disp(disp_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(X, Y, Z, 3) world displacements (mm) → fixed-grid voxel displacements."""
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64)[:3, :3])
    return (disp_mm.astype(np.float64) @ inv.T).astype(np.float32)


class NiftyReg(Method):
    uses_cuda = False
    kind = "niftyreg"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resolve_params()
        self.last_cpp: Path | None = None

    def f3d_args(self) -> list[str]:
        p = self.params
        args = ["-ln", str(int(p["levels"]))]
        if p["similarity"] == "nmi":
            args.append("--nmi")
        elif p["similarity"] == "ssd":
            args.append("--ssd")
        else:
            raise CoreregError(f"niftyreg: similarity must be nmi or ssd, not '{p['similarity']}'")
        if not p["conjugate_gradient"]:
            args.append("-noConj")
        if p["max_iterations"]:
            args += ["-maxit", str(int(p["max_iterations"]))]
        if p["bending_energy"] is not None:
            args += ["-be", str(float(p["bending_energy"]))]
        if p["spacing_mm"] is not None:
            args += ["-sx", str(-float(p["spacing_mm"]))]  # negative: in mm, as reg_f3d reads it
        return args + [str(a) for a in p["extra"]]

    def register(
        self, fixed: np.ndarray, moving: np.ndarray, workdir: Path | None = None
    ) -> np.ndarray:
        import torch

        threads = torch.get_num_threads()  # the job's --threads (corereg register sets it)
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            t = Path(tmp)
            for name, arr in (("fixed", fixed), ("moving", moving)):
                nib.save(
                    nib.Nifti1Image(np.asarray(arr, dtype=np.float32), self.affine),
                    t / f"{name}.nii.gz",
                )
            run(
                "reg_f3d",
                [
                    "-ref",
                    str(t / "fixed.nii.gz"),
                    "-flo",
                    str(t / "moving.nii.gz"),
                    "-cpp",
                    str(t / "cpp.nii.gz"),
                    "-res",
                    str(t / "res.nii.gz"),
                    *self.f3d_args(),
                ],
                self.params["bin_dir"],
                threads,
            )
            run(
                "reg_transform",
                [
                    "-ref",
                    str(t / "fixed.nii.gz"),
                    "-disp",
                    str(t / "cpp.nii.gz"),
                    str(t / "disp.nii.gz"),
                ],
                self.params["bin_dir"],
                threads,
            )
            disp = np.asarray(nib.load(t / "disp.nii.gz").dataobj, dtype=np.float32)
            if workdir is not None:  # keep the control points for the tool-vs-field test
                self.last_cpp = Path(workdir) / "cpp.nii.gz"
                shutil.copy(t / "cpp.nii.gz", self.last_cpp)
        disp = disp.reshape(*fixed.shape, 3)  # (X, Y, Z, 1, 3) as NiftyReg writes it
        return world_to_voxel_disp(disp, self.affine)
