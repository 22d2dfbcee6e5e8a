"""Phantoms: determinism, on-disk format, label ids, and registration difficulty."""

import hashlib

import nibabel as nib
import numpy as np
import pytest

from corereg.data.manifest import load_manifest
from corereg.data.synthetic import ABDOMEN_LABELS, CHEST_LABELS, generate_abdomen, generate_chest
from corereg.evaluation import dice_per_label

SHAPE, SPACING = (40, 36, 52), (9.0, 9.0, 9.0)


def digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.nii.gz")):
        h.update(np.asarray(nib.load(p).dataobj).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def abdomen(tmp_path_factory):
    return generate_abdomen(
        tmp_path_factory.mktemp("a") / "abd", "synth_abdomen", SHAPE, SPACING, 3, 4, seed=5
    )


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    return generate_chest(
        tmp_path_factory.mktemp("c") / "chest",
        "synth_chest",
        (40, 40, 36),
        (9.0, 9.0, 9.0),
        1,
        4,
        seed=5,
    )


def test_same_seed_same_data_other_seed_other_data(abdomen, tmp_path):
    again = generate_abdomen(tmp_path / "again", "synth_abdomen", SHAPE, SPACING, 3, 4, seed=5)
    other = generate_abdomen(tmp_path / "other", "synth_abdomen", SHAPE, SPACING, 3, 4, seed=6)
    assert digest(abdomen) == digest(again)
    assert digest(abdomen) != digest(other)


def test_abdomen_format_labels_and_pairs(abdomen):
    m = load_manifest(abdomen)
    assert m.labels == ABDOMEN_LABELS
    assert len(m.pairs("train")) == 3 and len(m.pairs("test")) == 6  # C(3,2), C(4,2)
    assert all(p["fixed"] < p["moving"] for p in m.pairs())
    img = nib.load(m.image_path("0001"))
    assert img.shape == SHAPE and img.get_data_dtype() == np.int16
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    np.testing.assert_allclose(img.header.get_zooms(), SPACING)
    lab = nib.load(m.label_path("0001"))
    assert lab.get_data_dtype() == np.uint8
    hu, _ = m.load_image("0001")
    assert -1024 <= hu.min() and hu.max() <= 3071
    present = set(np.unique(m.load_labels("0001"))) - {0}
    assert present <= set(ABDOMEN_LABELS) and len(present) >= 11


def test_abdomen_inter_patient_registration_is_hard(abdomen):
    m = load_manifest(abdomen)
    dice = [
        np.nanmean(
            dice_per_label(m.load_labels(p["fixed"]), m.load_labels(p["moving"]), list(m.labels))
        )
        for p in m.pairs("test")
    ]
    assert np.mean(dice) < 0.4


def test_chest_longitudinal_pairs(chest):
    m = load_manifest(chest)
    assert m.labels == CHEST_LABELS
    assert next((p["fixed"], p["moving"]) for p in m.pairs("test")) == ("0003", "0004")
    dice = [
        np.nanmean(
            dice_per_label(m.load_labels(p["fixed"]), m.load_labels(p["moving"]), list(m.labels))
        )
        for p in m.pairs("test")
    ]
    assert 0.3 < np.mean(dice) < 0.7
    present = set(np.unique(m.load_labels("0003"))) - {0}
    assert {1, 2, 3, 4, 5, 18, 19, 20, 21, 22} <= present
    assert len(present & set(range(6, 18))) >= 10  # most vertebrae at 9 mm


def test_a_chest_pair_shares_the_anatomy(chest):
    m = load_manifest(chest)
    a, b = m.load_labels("0003"), m.load_labels("0004")
    # same patient: same set of structures, similar volumes
    for lab in (1, 2, 3, 5, 18):
        assert abs(int((a == lab).sum()) - int((b == lab).sum())) < 0.35 * (a == lab).sum()
