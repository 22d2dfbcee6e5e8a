"""Evaluation following the Learn2Reg conventions (MDL-UzL/L2R ``evaluation.py``).

* Fields are (H, W, D, 3) in voxel units of the fixed grid; the moving label map
  is warped with ``map_coordinates(moving, identity + disp, order=0)``.
* Dice per structure; a structure absent from the fixed or the moving labels is
  missing (NaN), never 0.  A structure present in both but lost by the warp is 0.
* HD95 per structure in mm: the ``surface-distance`` package's robust Hausdorff
  distance at 95 % (area-weighted surface elements, the maximum of the two
  directed percentiles), the function the Learn2Reg evaluation calls.  Learn2Reg
  passes unit spacing (voxels); this pipeline passes the voxel spacing, so on the
  isotropic grids of both datasets its value is Learn2Reg's times the spacing.
* SDlogJ three ways (columns ``sdlogj_l2r``, ``sdlogj_std``, ``sdlogj_code``):
  Learn2Reg's std of log(clip(det J + 3)) over the interior (2-voxel crop),
  the standard std of log(clip(det J)), and the CoRe/Bigalke code's variant
  (the axis-mismatched Jacobian of the normalised field, see docs/method.md).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from surface_distance import compute_robust_hausdorff, compute_surface_distances

from corereg.voxels import identity_grid

EPS_J = 1e-9


# ----------------------------------------------------------------------------- warping
def warp_labels(moving: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Warp a moving label map onto the fixed grid (nearest neighbour, zero outside)."""
    if disp.shape[:3] != moving.shape:
        # Learn2Reg allows a field on a different grid only via upsampling; we require equality.
        raise ValueError(f"field grid {disp.shape[:3]} differs from the label grid {moving.shape}")
    coords = identity_grid(moving.shape) + np.moveaxis(disp, -1, 0)
    return ndimage.map_coordinates(moving, coords, order=0, mode="constant", cval=0).astype(
        moving.dtype
    )


def warp_image(moving: np.ndarray, disp: np.ndarray, order: int = 1, cval: float = -1000.0):
    coords = identity_grid(moving.shape) + np.moveaxis(disp, -1, 0)
    return ndimage.map_coordinates(moving, coords, order=order, mode="constant", cval=cval)


# ----------------------------------------------------------------------------- overlap
def dice_per_label(fixed: np.ndarray, warped: np.ndarray, labels) -> np.ndarray:
    """Dice for each label; NaN where the label is absent from the fixed or the warped map.

    Note the Learn2Reg evaluation tests presence on fixed and *moving*; callers pass
    ``present`` from :func:`presence` to apply that rule (see :func:`evaluate_pair`).
    """
    out = np.full(len(labels), np.nan)
    for i, lab in enumerate(labels):
        a = fixed == lab
        b = warped == lab
        sa, sb = a.sum(), b.sum()
        if sa + sb == 0:
            continue
        out[i] = 2.0 * np.logical_and(a, b).sum() / (sa + sb)
    return out


def presence(fixed: np.ndarray, moving: np.ndarray, labels) -> np.ndarray:
    fl = np.bincount(fixed.ravel(), minlength=256)
    ml = np.bincount(moving.ravel(), minlength=256)
    return np.array([fl[lab] > 0 and ml[lab] > 0 for lab in labels])


def hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """95th-percentile symmetric Hausdorff distance in mm between two non-empty masks,
    computed as the Learn2Reg evaluation does (``surface-distance``), with ``spacing`` in mm."""
    dists = compute_surface_distances(
        a.astype(bool), b.astype(bool), tuple(float(s) for s in spacing)
    )
    return float(compute_robust_hausdorff(dists, 95.0))


# ----------------------------------------------------------------------------- Jacobians
_KERNEL = np.array([-0.5, 0.0, 0.5])


def _grad(f: np.ndarray, axis: int) -> np.ndarray:
    """Central difference with zero padding, as Learn2Reg's ``scipy.ndimage.correlate``."""
    return ndimage.correlate1d(f, _KERNEL, axis=axis, mode="constant", cval=0.0)


def jacobian_matrix(disp: np.ndarray) -> np.ndarray:
    """J[a, c] = d(disp_c)/d(x_a) + delta_ac, shape (3, 3, H, W, D); disp is (H, W, D, 3)."""
    jac = np.empty((3, 3, *disp.shape[:3]), dtype=np.float64)
    for c in range(3):
        comp = disp[..., c].astype(np.float64)
        for a in range(3):
            jac[a, c] = _grad(comp, a) + (1.0 if a == c else 0.0)
    return jac


def det3(m: np.ndarray) -> np.ndarray:
    return (
        m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1])
        - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
        + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0])
    )


def jacobian_determinant(disp: np.ndarray, crop: int = 2) -> np.ndarray:
    det = det3(jacobian_matrix(disp))
    if crop:
        det = det[crop:-crop, crop:-crop, crop:-crop]
    return det


def sdlogj_l2r(disp: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Learn2Reg: std of log(clip(det J + 3, 1e-9, 1e9)) over the 2-voxel-cropped interior."""
    logj = np.log(np.clip(jacobian_determinant(disp) + 3.0, EPS_J, 1e9))
    if mask is not None:
        logj = logj[mask[2:-2, 2:-2, 2:-2] > 0]
    return float(logj.std())


def sdlogj_standard(disp: np.ndarray) -> float:
    """Standard: std of log(clip(det J, 1e-9, 1e9)) over the 2-voxel-cropped interior."""
    return float(np.log(np.clip(jacobian_determinant(disp), EPS_J, 1e9)).std())


def sdlogj_code_normalized(field: np.ndarray) -> float:
    """The CoRe/Bigalke code's SDlogJ of a normalised (3, H, W, D) field.

    Channels are (x, y, z) as ``grid_sample`` wants them.  The code scales channel c
    by [(H-1)/2, (W-1)/2, (D-1)/2][c] (wrong axis pairing), forms
    M[a][c] = d_a(channel c) + delta_ac with a in array order (axes mismatched),
    crops 2 voxels and returns std(log(clamp(det M + 3, 1e-9, 1e9))).
    """
    h, w, d = field.shape[1:]
    scaled = np.moveaxis(field, 0, -1) * np.array([(h - 1) / 2.0, (w - 1) / 2.0, (d - 1) / 2.0])
    det = det3(jacobian_matrix(scaled))[2:-2, 2:-2, 2:-2]
    return float(np.log(np.clip(det + 3.0, EPS_J, 1e9)).std())


def sdlogj_code(disp: np.ndarray) -> float:
    """:func:`sdlogj_code_normalized` of a Learn2Reg voxel field (H, W, D, 3).

    The normalised field is x = disp_a2 · 2/D, y = disp_a1 · 2/W, z = disp_a0 · 2/H
    (align_corners=False, the convention of the engine's fields).
    """
    h, w, d = disp.shape[:3]
    norm = np.stack([disp[..., 2] * 2.0 / d, disp[..., 1] * 2.0 / w, disp[..., 0] * 2.0 / h])
    return sdlogj_code_normalized(norm)


# ----------------------------------------------------------------------------- keypoints
def read_keypoints(path) -> np.ndarray:
    """A Learn2Reg keypoint file: one row ``x,y,z`` of voxel coordinates per point."""
    return np.loadtxt(path, delimiter=",", ndmin=2)


def tre_mm(fixed_kp: np.ndarray, moving_kp: np.ndarray, disp: np.ndarray, spacing_moving):
    """Target registration error per keypoint in mm, as Learn2Reg computes it: the field
    (voxel units) sampled at the fixed keypoints (cubic spline, ``map_coordinates``'
    default), added to them, compared with the moving keypoints in the moving spacing."""
    if fixed_kp.shape != moving_kp.shape:
        raise ValueError(f"{len(fixed_kp)} fixed but {len(moving_kp)} moving keypoints")
    at = np.stack([ndimage.map_coordinates(disp[..., c], fixed_kp.T) for c in range(3)], axis=1)
    return np.linalg.norm((fixed_kp + at - moving_kp) * np.asarray(spacing_moving), axis=1)


# ----------------------------------------------------------------------------- one pair
def evaluate_pair(fixed_lab, moving_lab, disp, labels, spacing) -> tuple[list[dict], dict]:
    """Per-structure rows and the per-pair summary for one registered pair."""
    warped = warp_labels(moving_lab, disp)
    present = presence(fixed_lab, moving_lab, labels)
    dice = dice_per_label(fixed_lab, warped, labels)
    rows = []
    diag = float(np.linalg.norm(np.asarray(fixed_lab.shape) * np.asarray(spacing)))
    for i, lab in enumerate(labels):
        if not present[i]:
            rows.append({"label": int(lab), "dice": np.nan, "hd95": np.nan, "present": False})
            continue
        a, b = fixed_lab == lab, warped == lab
        # A structure lost by the warp: Dice 0 and HD95 the image diagonal (worst case).
        h = hd95(a, b, spacing) if b.any() else diag
        d = 0.0 if np.isnan(dice[i]) else float(dice[i])
        rows.append({"label": int(lab), "dice": d, "hd95": h, "present": True})
    det = jacobian_determinant(disp)
    dices = [r["dice"] for r in rows if r["present"]]
    hds = [r["hd95"] for r in rows if r["present"]]
    summary = {
        "dice": float(np.mean(dices)) if dices else np.nan,
        "hd95": float(np.mean(hds)) if hds else np.nan,
        "n_structures": len(dices),
        # structures present in both images that the warp lost (HD95: the diagonal)
        "n_lost": sum(r["present"] and not (warped == r["label"]).any() for r in rows),
        "sdlogj_l2r": sdlogj_l2r(disp),
        "sdlogj_std": sdlogj_standard(disp),
        "sdlogj_code": sdlogj_code(disp),
        "neg_jac_percent": float((det <= 0).mean() * 100.0),
        "disp_mean_mm": float(np.linalg.norm(disp * np.asarray(spacing), axis=-1).mean()),
    }
    return rows, summary
