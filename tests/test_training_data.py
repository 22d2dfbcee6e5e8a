"""Where a training's scans live: the uncompressed scan cache (built once, rebuilt when
stale), pseudo-labels on disk, the placement choice, and trainings whose numbers do not
depend on any of it."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, engine_params, kill_after_checkpoints
from corereg.data.manifest import load_manifest
from corereg.data.scan_cache import ScanCache, cache_folder
from corereg.data.synthetic import generate_abdomen
from corereg.errors import CoreregError, InputError
from corereg.training.batches import DataPlacement, Scans, choose_placement
from corereg.training.label_file import LabelFile, LabelWriter

CPU = torch.device("cpu")
SHORT = {
    "stages": 2,
    "iters_per_stage": 3,
    "val_every": 2,
    "val_pairs": 1,
    "adam_iters": 4,
    "label_crop_border": 2,
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache") / "prepared"
    generate_abdomen(root, "synth_abdomen", (32, 32, 32), (12.0, 12.0, 12.0), 4, 2, seed=3)
    return root


def test_cache_entries_equal_the_prepared_scans_and_are_built_once(prepared, tmp_path):
    m = load_manifest(prepared)
    cache = ScanCache(m, str(tmp_path / "c"))
    ids = [c["id"] for c in m.cases()]
    assert cache.ensure(ids, ids[:2]) == len(ids) + 2
    assert cache.ensure(ids, ids[:2]) == 0  # fresh entries are not rebuilt
    for i in ids:
        img = cache.image(i)
        assert img.dtype == np.float32 and np.array_equal(img, m.load_image(i)[0])
    assert np.array_equal(cache.labels(ids[0]), m.load_labels(ids[0]))
    assert cache.nbytes(2, 1) == 32**3 * 9
    # the default folder lies beside the prepared dataset, one per dataset
    assert cache_folder(m).parent == prepared.parent / "cache"
    assert cache_folder(m).name.startswith("synth_abdomen-")


def test_a_stale_entry_is_rebuilt_never_used(prepared, tmp_path):
    import shutil

    copy = tmp_path / "prepared"
    shutil.copytree(prepared, copy)
    m = load_manifest(copy)
    cache = ScanCache(m)
    case = m.cases()[0]["id"]
    cache.ensure([case])
    before = cache.image(case)
    # the dataset is prepared again: the scan changes (new content, new file)
    import nibabel as nib

    path = m.image_path(case)
    img = nib.load(str(path))
    changed = np.asarray(img.dataobj, dtype=np.float32) + 7.0
    time.sleep(0.01)
    nib.save(nib.Nifti1Image(changed, img.affine), str(path))
    assert not cache.fresh(case, "image")
    assert cache.ensure([case]) == 1
    now = cache.image(case)
    assert np.array_equal(now, m.load_image(case)[0]) and not np.array_equal(now, before)
    # an entry whose stamp is missing (a build that was killed) is rebuilt too
    (cache.folder / f"{case}.image.json").unlink()
    assert cache.ensure([case]) == 1


def test_entries_of_cases_no_longer_in_the_dataset_are_removed(prepared, tmp_path):
    import shutil

    copy = tmp_path / "prepared"
    shutil.copytree(prepared, copy)
    m = load_manifest(copy)
    ids = [c["id"] for c in m.cases()]
    cache = ScanCache(m, str(tmp_path / "c"))
    cache.ensure(ids, ids)
    assert cache.prune() == 0  # every entry belongs to a listed case
    # the dataset is prepared again without its last case
    meta = json.loads((copy / "manifest.json").read_text())
    gone = meta["cases"].pop()["id"]
    meta["pairs"] = [p for p in meta["pairs"] if gone not in (p["fixed"], p["moving"])]
    (copy / "manifest.json").write_text(json.dumps(meta))
    smaller = ScanCache(load_manifest(copy), str(tmp_path / "c"))
    assert smaller.folder == cache.folder
    freed = smaller.prune()  # a float32 scan and a uint8 label map, their headers and stamps
    assert 32**3 * 5 < freed < 32**3 * 5 + 2000, freed
    assert smaller.prune() == 0
    left = {f.name.lstrip(".").split(".")[0] for f in smaller.folder.iterdir()}
    assert left == set(ids) - {gone}
    for i in ids[:-1]:  # the others are untouched and fresh
        assert smaller.fresh(i, "image") and smaller.fresh(i, "labels")


def test_an_unreadable_entry_and_an_unset_variable_are_one_line(prepared, tmp_path):
    m = load_manifest(prepared)
    cache = ScanCache(m, str(tmp_path / "c"))
    case = m.cases()[0]["id"]
    cache.ensure([case])
    (cache.folder / f"{case}.image.npy").write_bytes(b"not an array")
    with pytest.raises(InputError, match="cache entry cannot be read"):
        cache.image(case)
    os.environ.pop("COREREG_NO_SUCH_VARIABLE", None)
    with pytest.raises(InputError, match="environment variable that is not set"):
        ScanCache(m, "$COREREG_NO_SUCH_VARIABLE/cache")
    os.environ["COREREG_TEST_SCRATCH"] = str(tmp_path / "scratch")
    try:
        assert ScanCache(m, "$COREREG_TEST_SCRATCH/c").folder.parent == tmp_path / "scratch/c"
    finally:
        del os.environ["COREREG_TEST_SCRATCH"]


def test_placement_follows_the_setting_and_the_free_gpu_memory(monkeypatch):
    cuda = torch.device("cuda")
    assert choose_placement(DataPlacement(True), CPU, 10**12) == "device"
    assert choose_placement(DataPlacement(False), cuda, 1) == "cache"
    assert choose_placement(DataPlacement("auto"), CPU, 1) == "cache"  # CPU: the cache
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * 2**30, 80 * 2**30))
    assert choose_placement(DataPlacement("auto", 0.5), cuda, 20 * 2**30) == "device"
    assert choose_placement(DataPlacement("auto", 0.5), cuda, 21 * 2**30) == "cache"
    assert choose_placement(DataPlacement("auto", 0.9), cuda, 35 * 2**30) == "device"
    with pytest.raises(CoreregError, match="device_share"):
        DataPlacement("auto", 0.0)
    with pytest.raises(CoreregError, match="auto, true or false"):
        DataPlacement("yes")


def test_prefetched_and_resident_scans_are_the_same_arrays(prepared, tmp_path):
    from corereg.measure import PhaseClock

    m = load_manifest(prepared)
    ids = [c["id"] for c in m.cases()][:3]
    clock = PhaseClock(CPU)
    cached = Scans(ScanCache(m, str(tmp_path / "c")), ids, ids[:1], CPU, "cache", clock)
    resident = Scans(ScanCache(m, str(tmp_path / "c")), ids, ids[:1], CPU, "device")
    cached.prefetch(ids[:2], [("x", lambda: torch.ones(2))])
    for i in ids:  # two prefetched, one read at once
        assert torch.equal(cached.image(i), resident.image(i))
        assert cached.image(i).shape == (1, 1, 32, 32, 32)
    assert torch.equal(cached.extra("x", lambda: torch.zeros(2)), torch.ones(2))
    assert torch.equal(cached.labels(ids[0]), resident.labels(ids[0]))
    assert cached.labels(ids[0]).dtype == torch.int64
    assert clock.phases["data_wait"]["calls"] == 7
    cached.close()


def test_label_file_round_trip_and_no_half_file(tmp_path):
    labels = torch.randn(5, 3, 4, 4, 4)
    w = LabelWriter(tmp_path / "labels_stage0.npy", 5)
    for k in range(5):
        w.append(labels[k : k + 1])
    f = w.close()
    assert len(f) == 5 and torch.equal(f[2:3], labels[2:3]) and torch.equal(f[0:5], labels)
    w = LabelWriter(tmp_path / "labels_stage1.npy", 5)
    w.append(labels[:1])
    w.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels_stage0.npy"]
    with pytest.raises(ValueError, match="1 labels written, 5 expected"):
        w = LabelWriter(tmp_path / "labels_stage2.npy", 5)
        w.append(labels[:1])
        w.close()
    with pytest.raises(InputError, match=r"delete checkpoint\.pt"):
        LabelFile(tmp_path / "labels_stage9.npy")


def _train(prepared, out, placement, **over):
    from corereg.training.selftrain import Trainer, load_data

    m = load_manifest(prepared)
    p = engine_params(**{**SHORT, **over})
    d = load_data(m, list(range(1, 14)), 1, CPU, placement)
    tr = Trainer(d, p, 7, CPU, out, clamp_eval=None, log=lambda s: None)
    seen = {}
    finish = tr._finish

    def capture():
        seen["labels"] = tr.labels[0 : len(tr.labels)]
        return finish()

    tr._finish = capture
    final = tr.run()
    return tr, seen["labels"], torch.load(final, weights_only=False)["model"]


@pytest.mark.parametrize("contrastive", [False, True], ids=["bigalke", "core"])
def test_the_numbers_do_not_depend_on_where_the_scans_live(prepared, tmp_path, contrastive):
    """Scans resident in memory (the earlier behaviour) or read per batch from the cache,
    with the next batch read ahead: the same losses, labels, weights and network, bit for bit."""
    over = {"contrastive": True, "cl_num_samples": 64, "cl_border": 1} if contrastive else {}
    runs = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see RESUME below
    try:
        for on in (True, False):
            placement = DataPlacement(on, 0.5, str(tmp_path / "cache"))
            runs[on] = _train(prepared, tmp_path / str(on), placement, **over)
    finally:
        torch.set_num_threads(threads)
    (ta, la, wa), (tb, lb, wb) = runs[True], runs[False]
    assert ta.d.scans.placement == "device" and tb.d.scans.placement == "cache"
    assert [r["loss"] for r in ta.rows] == [r["loss"] for r in tb.rows]
    assert [r["val_dice"] for r in ta.rows] == [r["val_dice"] for r in tb.rows]
    assert torch.equal(ta.weights, tb.weights) and torch.equal(la, lb)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the difficulty weights ranked from the per-pair errors, as from all pairs at once
    assert sorted(ta.weights.tolist()) == sorted(
        torch.sigmoid(torch.linspace(5, -5, len(ta.weights))).tolist()
    )
    costs = json.loads((tmp_path / "False" / "costs.json").read_text())
    assert costs["data_placement"] == "cache" and costs["phases"]["data_wait"]["calls"] > 0
    # the spent resume state is gone: no checkpoint and no pseudo-label file
    assert not list((tmp_path / "False").glob("labels_stage*.npy"))
    assert not (tmp_path / "False" / "checkpoint.pt").exists()


# One thread: a multi-threaded CPU reduction may split its sums differently when the
# machine is busy, and these tests compare whole trainings bit for bit.
RESUME = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from conftest import engine_params
from corereg.data.manifest import load_manifest
from corereg.training.batches import DataPlacement
from corereg.training.selftrain import Trainer, load_data
m = load_manifest(sys.argv[1])
p = engine_params(**{short!r})
d = load_data(m, list(range(1, 14)), 1, "cpu", DataPlacement(False, 0.5, sys.argv[3]))
Trainer(d, p, 7, torch.device("cpu"), sys.argv[2], clamp_eval=None).run()
"""


@pytest.mark.parametrize("cache_after_kill", ["present", "absent"])
def test_a_killed_training_resumes_to_the_same_network(prepared, tmp_path, cache_after_kill):
    import shutil

    code = RESUME.format(tests=str(ROOT / "tests"), short=SHORT)
    cache = tmp_path / "cache"
    straight = kill_after_checkpoints(code, 99, str(prepared), str(tmp_path / "a"), str(cache))
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = kill_after_checkpoints(code, 1, str(prepared), str(tmp_path / "b"), str(cache))
    assert killed.returncode != 0
    assert (tmp_path / "b" / "checkpoint.pt").is_file()
    assert (tmp_path / "b" / "labels_stage1.npy").is_file()  # the checkpoint's labels
    if cache_after_kill == "absent":
        shutil.rmtree(cache)
    resumed = kill_after_checkpoints(code, 99, str(prepared), str(tmp_path / "b"), str(cache))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    a = torch.load(tmp_path / "a" / "final.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "final.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "b").glob("labels_stage*.npy"))


def test_a_checkpoint_without_its_label_file_is_one_line(prepared, tmp_path):
    code = RESUME.format(tests=str(ROOT / "tests"), short=SHORT)
    cache = str(tmp_path / "cache")
    killed = kill_after_checkpoints(code, 1, str(prepared), str(tmp_path / "b"), cache)
    assert killed.returncode != 0
    (tmp_path / "b" / "labels_stage1.npy").unlink()
    again = kill_after_checkpoints(code, 99, str(prepared), str(tmp_path / "b"), cache)
    assert again.returncode != 0
    assert "labels_stage1.npy: pseudo-label file of the checkpoint is missing" in again.stderr
