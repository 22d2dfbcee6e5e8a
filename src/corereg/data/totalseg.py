"""TotalSegmentator labels for RAD-ChestCT: the 22 evaluation structures as ids 1-22.

The structures are named here (docs/data.md); their TotalSegmentator ids are read
from the installed package's own class maps (``totalsegmentator.map_to_binary``),
never retyped:

* version 1.5.7 (what the authors used): task ``total`` of the v1 package
  (the v2 package keeps the same map as ``total_v1``);
* version 2.x: ``total`` for the lobes and vertebrae, plus the licensed task
  ``heartchambers_highres`` for the five heart structures.

Labels are computed on the converted 1.5 mm CT: TotalSegmentator's ``total``
models run at 1.5 mm internally, so labelling the original 0.8 mm scan would be
resampled to 1.5 mm and back, and the labels would then need a second
(nearest-neighbour) resampling onto the 1.5 mm grid; on the converted CT the
labels share its grid exactly.

``precomputed``: a folder of TotalSegmentator multilabel outputs
(``<scan>_ts.nii.gz``, as in the authors' ``lbls_ts/``) is mapped instead of
running TotalSegmentator.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from corereg.data.settings import TotalSegSettings
from corereg.errors import CoreregError, InputError
from corereg.io import LABELS, atomic_dir, save_nifti

LOBES = [
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
]
VERTEBRAE = [f"vertebrae_T{k}" for k in range(12, 0, -1)]  # eval ids 6..17 = T12..T1
HEART = [
    "heart_myocardium",
    "heart_atrium_left",
    "heart_ventricle_left",
    "heart_atrium_right",
    "heart_ventricle_right",
]
STRUCTURES = LOBES + VERTEBRAE + HEART  # eval id = index + 1


def class_maps(version: str) -> dict[str, dict[int, str]]:
    """``{task: {ts_id: name}}`` from the installed TotalSegmentator, for the tasks a version uses."""
    try:
        mod = importlib.import_module("totalsegmentator.map_to_binary")
    except ImportError as exc:
        raise CoreregError(
            "TotalSegmentator is not installed in this environment (envs/totalseg_v1.yaml or "
            "envs/totalseg_v2.yaml; `pip install TotalSegmentator==...`)"
        ) from exc
    cm = mod.class_map
    if version.startswith("1."):
        return {"total": cm["total_v1"] if "total_v1" in cm else cm["total"]}
    return {"total": cm["total"], "heartchambers_highres": cm["heartchambers_highres"]}


def id_map(version: str) -> dict[str, dict[int, int]]:
    """``{task: {ts_id: eval_id}}`` for the 22 structures."""
    maps = class_maps(version)
    out: dict[str, dict[int, int]] = {}
    for eval_id, name in enumerate(STRUCTURES, start=1):
        task = "heartchambers_highres" if version[:1] != "1" and name in HEART else "total"
        by_name = {v: k for k, v in maps[task].items()}
        if name not in by_name:
            raise CoreregError(f"TotalSegmentator {version} task {task} has no class '{name}'")
        out.setdefault(task, {})[by_name[name]] = eval_id
    return out


def remap(
    ts_labels: np.ndarray, mapping: dict[int, int], into: np.ndarray | None = None
) -> np.ndarray:
    lut = np.zeros(max(int(ts_labels.max()), max(mapping)) + 1, dtype=np.uint8)
    for ts_id, eval_id in mapping.items():
        lut[ts_id] = eval_id
    mapped = lut[ts_labels.astype(np.int64)]
    if into is None:
        return mapped
    into[mapped > 0] = mapped[mapped > 0]
    return into


def installed_version() -> str | None:
    """The TotalSegmentator version of this Python environment, or None."""
    from importlib import metadata

    try:
        return metadata.version("TotalSegmentator")
    except metadata.PackageNotFoundError:
        return None


def check(cfg) -> list[str]:
    """What is missing before a long labelling job (empty: ready); ``cfg``: the source's
    ``totalsegmentator`` settings."""
    cfg = TotalSegSettings.of(cfg)
    problems = []
    if cfg.precomputed:
        if not Path(cfg.precomputed).is_dir():
            problems.append(
                f"precomputed TotalSegmentator labels: folder {cfg.precomputed} does not exist"
            )
        return problems
    version = cfg.version
    env = "envs/totalseg_v1.yaml" if version.startswith("1.") else "envs/totalseg_v2.yaml"
    installed = installed_version()
    if installed is None:
        problems.append(
            f"TotalSegmentator {version} is not importable here: the label job runs in {env} "
            "(snakemake --use-conda), or install it into this environment"
        )
    elif installed != version:
        problems.append(
            f"this environment has TotalSegmentator {installed}, the label job runs {version} "
            f"(in {env} with --use-conda): check there (`snakemake --use-conda "
            "--conda-create-envs-only` builds it, `snakemake --list-conda-envs` names its folder, "
            "then `conda run -p FOLDER corereg label --dataset radchest --check`); its weights "
            "and downloader differ from this one's"
        )
    home = Path(
        os.environ.get("TOTALSEG_WEIGHTS_PATH")
        or Path(os.environ.get("TOTALSEG_HOME_DIR", Path.home() / ".totalsegmentator"))
        / "nnunet"
        / "results"
    )
    wanted = (
        ["Task251", "Task252", "Task253", "Task254", "Task255"]
        if version.startswith("1.")
        else ["Dataset291", "Dataset292", "Dataset293", "Dataset294", "Dataset295", "Dataset301"]
    )
    found = (
        {
            p.name[:10] if p.name.startswith("Dataset") else p.name[:7]
            for p in home.rglob("*")
            if p.is_dir()
        }
        if home.is_dir()
        else set()
    )
    missing = [w for w in wanted if w not in found]
    if missing:
        fetch = (
            "`totalseg_download_weights -t total` inside the TotalSegmentator 1.5.7 "
            "environment (it fetches Task251-255; the 2.x command of the same name fetches "
            "the v2 weights instead)"
            if version.startswith("1.")
            else "`totalseg_download_weights -t total` and `-t heartchambers_highres` inside "
            "the TotalSegmentator 2.x environment (after totalseg_set_license)"
        )
        problems.append(
            f"TotalSegmentator {version} weights {missing} not found under {home}: on a machine "
            f"with internet run {fetch}, then copy the folder to the nodes and set "
            "TOTALSEG_HOME_DIR (or TOTALSEG_WEIGHTS_PATH)"
        )
    if not version.startswith("1."):
        env = cfg.licence_env
        if not os.environ.get(env):
            problems.append(
                f"heartchambers_highres needs a TotalSegmentator licence: export {env}=aca_... "
                "(free academic licence from the TotalSegmentator website)"
            )
    try:
        import torch

        if not torch.cuda.is_available():
            problems.append(
                "no CUDA GPU visible: TotalSegmentator would run on the CPU (hours per scan)"
            )
    except ImportError:
        pass
    return problems


def label(converted, out, cfg, log=print) -> Path:
    """Label every converted scan; write ``labelsTr/RadChestCT_<scan>_0000.nii.gz`` (uint8, ids 1-22)."""
    converted, out = Path(converted), Path(out)
    cfg = TotalSegSettings.of(cfg)
    version = cfg.version
    pre = Path(cfg.precomputed) if cfg.precomputed else None
    if pre is None:
        problems = [p for p in check(cfg) if not p.startswith("no CUDA")]
        if problems:
            raise CoreregError("TotalSegmentator is not ready:\n  " + "\n  ".join(problems))
    mapping = id_map(version)
    images = sorted((converted / "imagesTr").glob("RadChestCT_*_0000.nii.gz"))
    if not images:
        raise InputError(converted, "no converted scans (imagesTr/RadChestCT_*_0000.nii.gz)")
    with atomic_dir(out, LABELS) as tmp:
        for k, img_path in enumerate(images):
            scan = img_path.name[len("RadChestCT_") : -len("_0000.nii.gz")]
            img = nib.load(img_path)
            result = np.zeros(img.shape, dtype=np.uint8)
            for task, ids in mapping.items():
                if pre is not None:
                    ts = _load_precomputed(pre, scan, task, img)
                else:
                    ts = _run_totalsegmentator(img_path, task, version, cfg)
                remap(ts, ids, into=result)
            save_nifti(tmp / "labelsTr" / img_path.name, result, img.affine, dtype=np.uint8)
            if k % 25 == 0:
                log(
                    f"[label] {k + 1}/{len(images)} {scan}: {len(np.unique(result)) - 1} of 22 structures"
                )
    log(
        f"[label] {len(images)} scans labelled (TotalSegmentator {version}{', precomputed' if pre else ''})"
    )
    return out


def _load_precomputed(folder: Path, scan: str, task: str, img) -> np.ndarray:
    name = f"{scan}_ts.nii.gz" if task == "total" else f"{scan}_{task}.nii.gz"
    path = folder / name
    if not path.is_file():
        raise InputError(path, "precomputed TotalSegmentator output missing")
    ts = nib.load(path)
    if ts.shape != img.shape or not np.allclose(ts.affine, img.affine, atol=1e-3):
        raise InputError(path, f"grid {ts.shape} does not match the converted scan {img.shape}")
    return np.asarray(ts.dataobj).astype(np.int64)


def _run_totalsegmentator(
    img_path: Path, task: str, version: str, cfg: TotalSegSettings
) -> np.ndarray:  # pragma: no cover
    """One TotalSegmentator call (needs the tool, its weights and, for v2 heart chambers, a licence)."""
    import tempfile

    from totalsegmentator.python_api import totalsegmentator

    kwargs = {"ml": True, "task": task}  # file in, file out: the form both API versions accept
    if not version.startswith("1."):
        kwargs.update(device=cfg.device, quiet=True)
        if task == "heartchambers_highres":
            kwargs["license_number"] = os.environ.get(cfg.licence_env)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "seg.nii.gz"
        totalsegmentator(str(img_path), str(out), **kwargs)
        return np.asarray(nib.load(out).dataobj).astype(np.int64)
