"""Synthetic CT-like phantoms in the exact on-disk format of the prepared real data.

Two generators, deterministic from a seed:

* ``abdomen``: inter-patient abdominal CT with the 13 AbdomenCTCT organs (same
  ids and names), a body with skin, subcutaneous fat, muscle wall, spine and
  bowel.  "Patients" differ by a global affine, a smooth random deformation and
  per-organ jitter, so that inter-patient registration is hard.
* ``chest``: longitudinal chest CT with the 22 RAD-ChestCT evaluation structures
  (5 lung lobes, T12..T1, myocardium and the 4 chambers).  The two scans of a
  "patient" share the anatomy and differ by a breathing-like deformation
  (diaphragm and chest-wall motion), a small repositioning and new noise.

Anatomy is described in millimetres in a canonical space centred on the volume
and rendered by pulling every output voxel back into that space, so any grid
size and spacing produces the same anatomy.  World axes are RAS+: array axis 0
runs to the patient's right, axis 1 to anterior, axis 2 to superior, as
``nib.aff2axcodes`` reports for the Learn2Reg AbdomenCTCT images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from corereg.data.manifest import ABDOMEN_LABELS, write_manifest
from corereg.io import PREPARED, atomic_dir, save_nifti

CHEST_LABELS = {
    1: "lung upper lobe left",
    2: "lung lower lobe left",
    3: "lung upper lobe right",
    4: "lung middle lobe right",
    5: "lung lower lobe right",
    **{6 + k: f"vertebra T{12 - k}" for k in range(12)},
    18: "heart myocardium",
    19: "heart atrium left",
    20: "heart ventricle left",
    21: "heart atrium right",
    22: "heart ventricle right",
}


# ----------------------------------------------------------------------------- geometry
def world_grid(shape, spacing) -> np.ndarray:
    """(3, H, W, D) world coordinates in mm of every voxel, centred on the volume."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)


def affine_for(shape, spacing) -> np.ndarray:
    """RAS+ affine whose world origin lies at the volume centre."""
    aff = np.diag([*spacing, 1.0]).astype(np.float64)
    aff[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape, spacing, strict=True)]
    return aff


def smooth_field(rng, shape, control=(4, 4, 5), amplitude=10.0) -> np.ndarray:
    """A smooth random vector field (3, H, W, D) in mm: cubic interpolation of coarse noise."""
    coarse = rng.normal(size=(3, *control)).astype(np.float32)
    coords = np.stack(
        np.meshgrid(
            *[
                np.linspace(0, c - 1, n, dtype=np.float32)
                for c, n in zip(control, shape, strict=True)
            ],
            indexing="ij",
        )
    )
    out = np.stack(
        [ndimage.map_coordinates(coarse[k], coords, order=3, mode="nearest") for k in range(3)]
    )
    return out * amplitude


def rotation(rng, max_deg) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return (rz @ ry @ rx).astype(np.float32)


def apply_affine(pts: np.ndarray, matrix: np.ndarray, offset) -> np.ndarray:
    """``matrix @ pts + offset`` for pts of shape (3, ...)."""
    flat = pts.reshape(3, -1)
    out = matrix @ flat + np.asarray(offset, dtype=np.float32).reshape(3, 1)
    return out.reshape(pts.shape).astype(np.float32)


@dataclass
class Ellipsoid:
    center: tuple
    radii: tuple
    rot: np.ndarray = field(default_factory=lambda: np.eye(3, dtype=np.float32))

    def level(self, x: np.ndarray) -> np.ndarray:
        """Normalised radius: < 1 inside."""
        local = apply_affine(x - np.reshape(self.center, (3, 1, 1, 1)), self.rot.T, (0, 0, 0))
        r = np.reshape(self.radii, (3, 1, 1, 1))
        return np.sqrt(((local / r) ** 2).sum(axis=0))

    def inside(self, x):
        return self.level(x) < 1.0


@dataclass
class Tube:
    points: np.ndarray  # (k, 3) polyline in mm
    radius: float

    def distance(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(3, -1).T
        best = np.full(flat.shape[0], np.inf, dtype=np.float32)
        for a, b in zip(self.points[:-1], self.points[1:], strict=True):
            ab = b - a
            t = np.clip(((flat - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
            d = np.linalg.norm(flat - (a + t[:, None] * ab), axis=1)
            best = np.minimum(best, d)
        return best.reshape(x.shape[1:])

    def inside(self, x):
        return self.distance(x) < self.radius


def jitter_shape(shape, rng, shift_mm, scale_range, rot_deg):
    """Random per-organ variation: shift, anisotropic scale and rotation."""
    lo, hi = scale_range
    if isinstance(shape, Ellipsoid):
        return Ellipsoid(
            tuple(np.asarray(shape.center) + rng.uniform(-1, 1, 3) * shift_mm),
            tuple(np.asarray(shape.radii) * rng.uniform(lo, hi, 3)),
            rotation(rng, rot_deg) @ shape.rot,
        )
    pts = shape.points + rng.uniform(-1, 1, shape.points.shape) * shift_mm * 0.6
    pts = pts + rng.uniform(-1, 1, 3) * shift_mm
    return Tube(pts.astype(np.float32), shape.radius * rng.uniform(lo, hi))


def texture(rng, shape, sigma_vox=1.0) -> np.ndarray:
    t = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma_vox)
    return t / (t.std() + 1e-6)


def body_layers(x, semi=(165.0, 120.0), center_y=-10.0):
    """Normalised elliptic radius of the body cross-section (constant along z)."""
    return np.sqrt((x[0] / semi[0]) ** 2 + ((x[1] - center_y) / semi[1]) ** 2)


# ----------------------------------------------------------------------------- abdomen
def abdomen_atlas() -> dict[int, object]:
    """Canonical abdomen organs (mm, RAS+: +x patient right, +y anterior, +z superior)."""
    e = Ellipsoid
    return {
        6: e((55, 5, 85), (85, 80, 70), rotation(np.random.default_rng(6), 10)),  # liver
        1: e((-85, -35, 80), (35, 45, 55)),  # spleen
        2: e((65, -60, 10), (28, 30, 50)),  # right kidney
        3: e((-65, -60, 25), (28, 30, 50)),  # left kidney
        7: e((-45, 35, 85), (45, 35, 50)),  # stomach
        4: e((45, 50, 30), (18, 20, 30)),  # gallbladder
        11: Tube(
            np.array([[25, 5, 35], [-15, 0, 40], [-60, -20, 50]], np.float32), 14.0
        ),  # pancreas
        12: e((40, -45, 75), (10, 8, 16)),  # right adrenal
        13: e((-40, -45, 80), (10, 8, 16)),  # left adrenal
        8: Tube(np.array([[-15, -45, -200], [-12, -40, 60], [-10, -35, 220]], np.float32), 12.0),
        9: Tube(np.array([[18, -40, -200], [22, -35, 60], [25, -25, 150]], np.float32), 11.0),
        10: Tube(
            np.array([[40, 10, 60], [0, -5, 52], [-45, -20, 60], [-75, -30, 72]], np.float32), 6.5
        ),
        5: Tube(np.array([[-5, -50, 240], [-15, -40, 150], [-30, 10, 120]], np.float32), 9.0),
    }


ABDOMEN_HU = {
    6: 105,
    1: 115,
    2: 165,
    3: 165,
    7: 35,
    4: 10,
    11: 85,
    12: 40,
    13: 40,
    8: 175,
    9: 140,
    10: 170,
    5: 55,
}
ABDOMEN_ORDER = (6, 1, 2, 3, 7, 4, 11, 12, 13, 10, 9, 8, 5)  # later ones paint over earlier ones


def render_abdomen(shape, spacing, rng, noise_hu=12.0) -> tuple[np.ndarray, np.ndarray]:
    grid = world_grid(shape, spacing)
    # Patient variation: global anisotropic scale + rotation + shift, then a smooth deformation.
    scale = np.diag(1.0 / rng.uniform([0.85, 0.85, 0.9], [1.15, 1.15, 1.1])).astype(np.float32)
    mat = scale @ rotation(rng, 6)
    shift = rng.uniform(-1, 1, 3) * np.array([15.0, 10.0, 20.0])
    x = apply_affine(grid, mat, -mat @ shift.astype(np.float32))
    x = x + smooth_field(rng, shape, (4, 4, 5), amplitude=9.0)

    hu = np.full(shape, -1000.0, dtype=np.float32)
    lab = np.zeros(shape, dtype=np.uint8)
    r = body_layers(x)
    body = r < 1.0
    hu[body] = -100.0  # subcutaneous / visceral fat
    hu[(r < 0.93) & (r > 0.85)] = 50.0  # abdominal muscle wall
    hu[r < 0.85] = -80.0
    # Spine: vertebral bodies and posterior elements, psoas muscles.
    spine = np.hypot(x[0], x[1] + 95.0) < 22.0
    hu[spine] = 280.0
    hu[np.hypot(x[0], x[1] + 95.0) < 16.0] = 180.0
    for side in (-1, 1):
        psoas = Ellipsoid((side * 45, -85, -60), (22, 20, 110))
        hu[psoas.inside(x) & body] = 55.0
    # Bowel: random loops with content and gas, filling the lower abdomen.
    for _ in range(10):
        c = (rng.uniform(-100, 100), rng.uniform(-20, 70), rng.uniform(-180, 0))
        loop = Ellipsoid(c, tuple(rng.uniform(15, 35, 3)), rotation(rng, 45))
        lv = loop.level(x)
        hu[(lv < 1.0) & body] = 25.0
        hu[(lv < 0.45) & body] = -700.0 if rng.uniform() < 0.5 else 20.0
    # Lung bases at the top of the field of view.
    for side in (-1, 1):
        lung = Ellipsoid((side * 80, -30, 300), (70, 85, 110))
        hu[lung.inside(x) & body] = -850.0

    atlas = abdomen_atlas()
    for lid in ABDOMEN_ORDER:
        shape_ = jitter_shape(atlas[lid], rng, shift_mm=10.0, scale_range=(0.85, 1.15), rot_deg=12)
        m = shape_.inside(x) & body
        lab[m] = lid
        hu[m] = ABDOMEN_HU[lid]
    # The stomach carries a gas bubble on its anterior side (unlabelled change of intensity).
    st = lab == 7
    hu[st & (x[1] > np.percentile(x[1][st], 80) if st.any() else st)] = -600.0

    tex = texture(rng, shape, 1.0)
    hu += np.where(lab > 0, 12.0, 8.0) * tex
    hu = ndimage.gaussian_filter(hu, 0.6)  # partial volume
    hu += rng.normal(0, noise_hu, size=shape).astype(np.float32)
    return np.clip(hu, -1024, 3071), lab


# ----------------------------------------------------------------------------- chest
CHEST_HU = {"lung": -850.0, "myocardium": 60.0, "blood": 30.0, "bone": 300.0, "fat": -100.0}


def render_chest(
    shape, spacing, anatomy_rng_seed: int, breath: float, position_shift, noise_rng, noise_hu=12.0
) -> tuple[np.ndarray, np.ndarray]:
    """One chest scan: the patient's anatomy (from ``anatomy_rng_seed``) at a breathing state.

    ``breath`` in [-1, 1] moves the diaphragm along z (up to ~25 mm at the lung
    bases) and expands the chest wall; ``position_shift`` (mm) repositions the
    patient on the table.
    """
    rng = np.random.default_rng(anatomy_rng_seed)
    grid = world_grid(shape, spacing)
    scale = np.diag(1.0 / rng.uniform([0.9, 0.9, 0.92], [1.1, 1.1, 1.08])).astype(np.float32)
    mat = scale @ rotation(rng, 4)
    x = apply_affine(grid, mat, -mat @ np.asarray(position_shift, dtype=np.float32))
    # Breathing: pull-back displacement, strongest at the lung bases, fading to the apex.
    z_top = 170.0
    w = np.clip((z_top - x[2]) / 340.0, 0.0, 1.0)
    bl = body_layers(x, semi=(160.0, 115.0), center_y=0.0)
    inner = np.clip(1.2 - bl, 0.0, 1.0)
    x = x + np.stack(
        [0.06 * breath * x[0] * inner, 0.10 * breath * x[1] * inner, 25.0 * breath * w * inner]
    ).astype(np.float32)
    x = x + smooth_field(rng, shape, (4, 4, 4), amplitude=6.0)  # anatomy, not breathing

    hu = np.full(shape, -1000.0, dtype=np.float32)
    lab = np.zeros(shape, dtype=np.uint8)
    bl = body_layers(x, semi=(160.0, 115.0), center_y=0.0)
    body = bl < 1.0
    hu[body] = CHEST_HU["fat"]
    hu[(bl < 0.95) & (bl > 0.84)] = 50.0  # chest wall muscle
    hu[bl < 0.84] = -60.0  # mediastinal fat
    # Lungs with lobes separated by fissures (planes in canonical space).
    j = lambda v: rng.uniform(-v, v)  # noqa: E731
    lungs = {
        "R": Ellipsoid((78 + j(5), -5, 15 + j(8)), (62, 88, 135), rotation(rng, 5)),
        "L": Ellipsoid((-80 + j(5), -5, 10 + j(8)), (56, 86, 130), rotation(rng, 5)),
    }
    heart = Ellipsoid((-15 + j(6), 35 + j(5), -55 + j(6)), (62, 52, 58), rotation(rng, 10))
    oblique = 0.9 + rng.uniform(-0.15, 0.15)
    fiss_r, fiss_l, horiz = j(10), j(10), 30.0 + j(10)
    for side, lung in lungs.items():
        m = lung.inside(x) & body & ~heart.inside(x)
        hu[m] = CHEST_HU["lung"]
        upper = (x[2] + oblique * x[1]) > (fiss_l if side == "L" else fiss_r)
        if side == "L":
            lab[m & upper] = 1
            lab[m & ~upper] = 2
        else:
            middle = upper & (x[2] < horiz) & (x[1] > -10)
            lab[m & upper & ~middle] = 3
            lab[m & middle] = 4
            lab[m & ~upper] = 5
    # Trachea and main bronchi (air, unlabelled).
    trachea = Tube(np.array([[0, 10, 200], [0, 5, 90], [30, -5, 60]], np.float32), 9.0)
    hu[trachea.inside(x) & body] = -950.0
    # Vertebrae T1 (top) .. T12 (bottom) with discs, on a kyphotic curve.
    z_levels = np.linspace(145, -150, 12) + j(6)
    height = 20.0
    for k, zc in enumerate(z_levels):  # k = 0 -> T1 -> label 17
        yc = -100.0 - 10.0 * np.cos(np.pi * (zc + 150) / 300.0)
        radius = 11.0 + 8.0 * k / 11.0
        m = (np.hypot(x[0], x[1] - yc) < radius) & (np.abs(x[2] - zc) < height / 2) & body
        lab[m] = 17 - k
        hu[m] = CHEST_HU["bone"] + 120.0 * (np.hypot(x[0], x[1] - yc)[m] > radius - 3)
        disc = (np.hypot(x[0], x[1] - yc) < radius) & (np.abs(x[2] - zc - 12.5) < 2.5) & body
        hu[disc] = 80.0
    # Heart: myocardium with the four chambers (contrast-free, so low blood contrast).
    h = heart.inside(x) & body
    lab[h] = 18
    hu[h] = CHEST_HU["myocardium"]
    c = np.asarray(heart.center)
    chambers = {
        20: Ellipsoid(tuple(c + np.array([-18, 5, -12])), (24, 22, 30), heart.rot),  # LV
        22: Ellipsoid(tuple(c + np.array([18, 20, -10])), (22, 16, 28), heart.rot),  # RV
        19: Ellipsoid(tuple(c + np.array([-10, -28, 25])), (22, 14, 16), heart.rot),  # LA
        21: Ellipsoid(tuple(c + np.array([28, -12, 20])), (18, 16, 20), heart.rot),  # RA
    }
    for lid, ch in chambers.items():
        m = ch.inside(x) & h
        lab[m] = lid
        hu[m] = CHEST_HU["blood"]
    aorta = Tube(
        np.array([[-5, 10, 60], [-10, 20, 120], [-25, -40, 120], [-25, -70, -160]], np.float32),
        13.0,
    )
    hu[aorta.inside(x) & body & (lab == 0)] = 45.0

    lungmask = np.isin(lab, (1, 2, 3, 4, 5))
    vessels = texture(rng, shape, 0.8)  # the same vessel tree in both scans of a patient
    hu[lungmask] += np.clip(vessels[lungmask] - 1.2, 0, None) * 350.0
    hu = ndimage.gaussian_filter(hu, 0.6)
    hu += noise_rng.normal(0, noise_hu, size=shape).astype(np.float32)
    return np.clip(hu, -1024, 3071), lab


# ----------------------------------------------------------------------------- writers
def _case_paths(name: str, case_id: str) -> tuple[str, str]:
    fn = f"{name}_{case_id}_0000.nii.gz"
    return f"imagesTr/{fn}", f"labelsTr/{fn}"


def _write_case(root: Path, name, case_id, hu, lab, affine, split) -> dict:
    img_rel, lab_rel = _case_paths(name, case_id)
    save_nifti(root / img_rel, np.round(hu), affine, dtype=np.int16)
    save_nifti(root / lab_rel, lab, affine, dtype=np.uint8)
    return {"id": case_id, "image": img_rel, "label": lab_rel, "split": split}


def generate_abdomen(
    out_dir,
    dataset: str,
    shape,
    spacing,
    n_train: int,
    n_test: int,
    seed: int,
    name="AbdomenCTCT",
    noise_hu=12.0,
) -> Path:
    """Inter-patient set: every unordered pair of train scans (and of test scans), lower id fixed."""
    if n_train < 2 or n_test < 2:
        raise ValueError("synthetic abdomen needs at least 2 train and 2 test scans")
    affine = affine_for(shape, spacing)
    with atomic_dir(out_dir, PREPARED) as root:
        cases = []
        for idx in range(n_train + n_test):
            case_id = f"{idx + 1:04d}"
            split = "train" if idx < n_train else "test"
            rng = np.random.default_rng([seed, 1, idx])
            hu, lab = render_abdomen(shape, spacing, rng, noise_hu)
            cases.append(_write_case(root, name, case_id, hu, lab, affine, split))
        pairs = []
        for split in ("train", "test"):
            ids = [c["id"] for c in cases if c["split"] == split]
            pairs += [
                {"fixed": a, "moving": b, "split": split}
                for i, a in enumerate(ids)
                for b in ids[i + 1 :]
            ]
        write_manifest(
            root,
            dataset,
            name,
            "synthetic_abdomen",
            shape,
            spacing,
            ABDOMEN_LABELS,
            cases,
            pairs,
            seed,
        )
    return Path(out_dir)


def generate_chest(
    out_dir,
    dataset: str,
    shape,
    spacing,
    n_train_pairs: int,
    n_test_pairs: int,
    seed: int,
    name="RadChestCT",
    noise_hu=12.0,
) -> Path:
    """Longitudinal set: one pair (scan 1 fixed, scan 2 moving) per synthetic patient."""
    if n_train_pairs < 1 or n_test_pairs < 1:
        raise ValueError("synthetic chest needs at least 1 train and 1 test pair")
    affine = affine_for(shape, spacing)
    with atomic_dir(out_dir, PREPARED) as root:
        cases, pairs = [], []
        for p in range(n_train_pairs + n_test_pairs):
            split = "train" if p < n_train_pairs else "test"
            prng = np.random.default_rng([seed, 2, p])
            anatomy_seed = int(prng.integers(2**31))
            b1 = prng.uniform(-0.5, 0.0)
            b2 = b1 + prng.uniform(0.6, 1.0) * prng.choice([-1, 1])
            ids = []
            for scan, (breath, shift) in enumerate(
                [(b1, (0.0, 0.0, 0.0)), (b2, tuple(prng.uniform(-1, 1, 3) * [8.0, 8.0, 14.0]))]
            ):
                case_id = f"{2 * p + scan + 1:04d}"
                hu, lab = render_chest(
                    shape,
                    spacing,
                    anatomy_seed,
                    breath,
                    shift,
                    np.random.default_rng([seed, 3, p, scan]),
                    noise_hu,
                )
                cases.append(_write_case(root, name, case_id, hu, lab, affine, split))
                ids.append(case_id)
            pairs.append({"fixed": ids[0], "moving": ids[1], "split": split})
        write_manifest(
            root, dataset, name, "synthetic_chest", shape, spacing, CHEST_LABELS, cases, pairs, seed
        )
    return Path(out_dir)


def generate_deformed(
    out_dir,
    n_train: int,
    n_test: int = 3,
    shape=(32, 32, 40),
    spacing=(12.0, 12.0, 12.0),
    amp_mm: float = 18.0,
    seed: int = 5,
    name="Deformed",
) -> Path:
    """One abdominal phantom under random smooth deformations (every pair differs by a smooth,
    recoverable field): the set on which the learned baselines' generalisation is checked."""
    from corereg.voxels import identity_grid

    rng = np.random.default_rng(seed)
    hu, lab = render_abdomen(shape, spacing, rng, 12.0)
    affine = affine_for(shape, spacing)
    with atomic_dir(out_dir, PREPARED) as root:
        cases = []
        for k in range(n_train + n_test):
            field = (
                smooth_field(rng, shape, (3, 3, 3), amp_mm) / np.array(spacing)[:, None, None, None]
            )
            coords = identity_grid(shape) + field
            img = ndimage.map_coordinates(hu, coords, order=1, mode="nearest")
            seg = ndimage.map_coordinates(lab, coords, order=0, mode="nearest")
            split = "train" if k < n_train else "test"
            cases.append(_write_case(root, name, f"{k + 1:04d}", img, seg, affine, split))
        pairs = [
            {"fixed": a["id"], "moving": b["id"], "split": a["split"]}
            for i, a in enumerate(cases)
            for b in cases[i + 1 :]
            if a["split"] == b["split"]
        ]
        write_manifest(
            root,
            name.lower(),
            name,
            "synthetic_abdomen",
            shape,
            spacing,
            ABDOMEN_LABELS,
            cases,
            pairs,
            seed,
        )
    return Path(out_dir)
