"""The code paths that make every Bigalke et al. and CoRe number: the test-time reg_fac
search, the protocol switches of the engine, the "original settings" row and the
contrastive term, each with a known or directly observable answer."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import ENGINE, ROOT, engine_params
from corereg.adapters import make_method
from corereg.config import deep_merge
from corereg.data.manifest import load_manifest
from corereg.data.synthetic import generate_abdomen
from corereg.params import EngineParams
from corereg.registration import network
from corereg.registration.engine_method import search_reg_fac
from corereg.registration.fields import to_voxels
from corereg.registration.pipeline import adam_field, network_field, prepare_input
from corereg.training.augment import affine_grid, augment_image, draw_affines
from corereg.training.selftrain import Trainer, load_data, train


def Engine(params, device, checkpoint, seed=0):
    """The engine method as register jobs make it (dataset settings split off its JSON)."""
    return make_method("engine", params, device, checkpoint, seed)


SMALL = {
    "contrastive": False,
    "stages": 2,
    "iters_per_stage": 2,
    "val_every": 2,
    "val_pairs": 1,
    "adam_iters": 4,
    "label_crop_border": 2,
    "cl_border": 1,
    "cl_num_samples": 50,
}
CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- reg_fac search
def test_search_steps_up_then_halves_on_reversal_and_stops_in_the_band():
    seen = []

    def round_at(reg_fac):  # SDlogJ falls as the regulariser grows
        seen.append(reg_fac)
        return 2.0 / reg_fac

    res = search_reg_fac(round_at, start=10.0, step=2.5, band=(0.135, 0.155), max_rounds=12)
    # 10 -> 0.200 (up) -> 12.5 -> 0.160 (up) -> 15 -> 0.133 (below: down, step 1.25) -> 13.75
    assert seen == [10.0, 12.5, 15.0, 13.75]
    assert res.status == "in_band" and res.reg_fac == 13.75
    assert res.sdlogj == pytest.approx(2.0 / 13.75)
    assert [r for r, _ in res.history] == seen


def test_search_halves_the_step_at_every_reversal_and_reports_a_miss():
    seen = []

    def round_at(reg_fac):  # a jump across the band: it can never be reached
        seen.append(reg_fac)
        return 0.2 if reg_fac < 11.0 else 0.1

    res = search_reg_fac(round_at, start=10.0, step=2.5, band=(0.135, 0.155), max_rounds=6)
    assert seen == [10.0, 12.5, 11.25, 10.0, 10.625, 11.25]
    assert res.status == "out_of_band" and res.reg_fac == 11.25 and len(res.history) == 6


def test_search_never_goes_below_zero_and_off_runs_one_round():
    res = search_reg_fac(lambda r: 0.0, start=2.0, step=2.5, band=(0.1, 0.2), max_rounds=3)
    assert [r for r, _ in res.history] == [2.0, 0.0, 0.0] and res.status == "out_of_band"
    off = search_reg_fac(lambda r: 0.5, start=10.0, step=2.5, band=None, max_rounds=12)
    assert off.history == [(10.0, 0.5)] and off.status == "off"


# ----------------------------------------------------------------------------- the engine
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("numbers") / "prep"
    generate_abdomen(root, "synth_abdomen", (32, 32, 32), (12.0, 12.0, 12.0), 3, 3, seed=3)
    return load_manifest(root)


@pytest.fixture(scope="module")
def random_net_checkpoint(data, tmp_path_factory):
    """The stage-0 random network (the 'untrained' row) as a checkpoint."""
    out = tmp_path_factory.mktemp("untrained")
    spec = {
        "params": deep_merge(ENGINE, {**SMALL, "stages": 0}),
        "seed": 1,
        "dataset": {"eval_labels": list(range(1, 14)), "clamp_eval": [-0.4, 0.6]},
    }
    return train(data, spec, CPU, out, log=lambda *_: None)


def engine_run(data, checkpoint, **params):
    p = {"adam_iters": 5, "clamp_eval": [-0.4, 0.6], **params}
    method = Engine(p, CPU, checkpoint, seed=0)
    pairs = data.pairs("test")[:2]
    saved = {}

    def load(pair):
        return data.load_image(pair["fixed"])[0], data.load_image(pair["moving"])[0], np.eye(4)

    def save(pair, disp, affine):
        saved[(pair["fixed"], pair["moving"])] = disp

    rows = method.register_set(pairs, load, save, warmup=False)
    return pd.DataFrame(rows), saved


def test_engine_search_that_misses_its_band_says_so(data, random_net_checkpoint, capsys):
    rows, saved = engine_run(
        data,
        random_net_checkpoint,
        sdlogj_band=[5.0, 6.0],
        reg_fac_max_rounds=2,
        reg_fac_start=10.0,
        reg_fac_step=2.5,
    )
    assert (rows.reg_fac_status == "out_of_band").all() and (rows.reg_fac == 7.5).all()
    assert "did not reach the SDlogJ band" in capsys.readouterr().out
    assert len(saved) == 2 and all(np.isfinite(d).all() for d in saved.values())
    inband, _ = engine_run(data, random_net_checkpoint, sdlogj_band=[0.0, 6.0])
    assert (inband.reg_fac_status == "in_band").all() and (inband.reg_fac == 10.0).all()


def test_test_adam_false_writes_the_network_field(data, random_net_checkpoint):
    rows, saved = engine_run(data, random_net_checkpoint, test_adam=False, sdlogj_band=[0.1, 0.2])
    assert (rows.reg_fac_status == "off").all() and rows.reg_fac.isna().all()
    net, ckpt = network.load_checkpoint(random_net_checkpoint, CPU)
    p = EngineParams.from_mapping({**ckpt["params"], "adam_iters": 5})
    pair = data.pairs("test")[0]
    fx, mv = (
        prepare_input(torch.from_numpy(data.load_image(k)[0])[None, None], p, [-0.4, 0.6])
        for k in (pair["fixed"], pair["moving"])
    )
    expected = to_voxels(network_field(net, fx, mv, p, True, [-0.4, 0.6])).numpy()
    np.testing.assert_allclose(saved[(pair["fixed"], pair["moving"])], expected, atol=1e-6)


def test_identical_images_give_a_near_zero_field_through_the_whole_engine(
    data, random_net_checkpoint
):
    img = data.load_image(data.pairs("test")[0]["fixed"])[0]
    p = {"adam_iters": 20, "clamp_eval": [-0.4, 0.6]}
    net_only = Engine({**p, "test_adam": False}, CPU, random_net_checkpoint).register(img, img)
    assert net_only.shape == (*img.shape, 3) and np.abs(net_only).max() == 0.0  # H + ICE + 2 warps
    disp = Engine(p, CPU, random_net_checkpoint).register(img, img)
    # Adam with lr = 1 turns the rounding-level gradient at the optimum into a first step of
    # unit size in its normalised update, then settles: a small residual, well under a voxel
    assert np.abs(disp).mean() < 0.1 and np.abs(disp).max() < 0.5


def test_mind_instance_optimisation_recovers_a_known_shift():
    from scipy import ndimage

    rng = np.random.default_rng(6)
    shape = (32, 32, 32)
    hu = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    hu = torch.from_numpy((hu / hu.std() * 300).astype(np.float32))[None, None]
    moved = torch.roll(hu, shifts=(2, 0, -1), dims=(2, 3, 4))  # moving(p + (2, 0, -1)) = fixed(p)
    net = network.FeatureNet().eval()
    p = engine_params(adam_feat="mind", adam_iters=40, amp=False)
    fx, mv = prepare_input(hu, p, None), prepare_input(moved, p, None)
    u = adam_field(net, fx, mv, torch.zeros(1, 3, *shape), 1.0, p, None, (hu, moved))
    centre = to_voxels(u)[10:22, 10:22, 10:22].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(centre.numpy(), [2.0, 0.0, -1.0], atol=0.5)


# ----------------------------------------------------------------------------- training switches
def trainer(data, **over) -> Trainer:
    d = load_data(data, list(range(1, 14)), 1)
    tr = Trainer(d, engine_params(**{**SMALL, **over}), 0, CPU, ROOT / "unused", clamp_eval=None)
    from corereg.device import seed_everything

    seed_everything(0)
    tr.net = network.build(tr.p)
    tr.labels = torch.zeros(len(d.train_pairs), 3, 16, 16, 16)
    tr.weights = torch.ones(len(d.train_pairs))
    tr.gens = {k: torch.Generator().manual_seed(0) for k in ("sample", "aug", "proj")}
    tr._fresh_optim()
    return tr


def test_the_default_contrastive_path_changes_g(data):
    """One training step from the same weights and batch: alpha = 0 leaves G exactly where
    registration-only training puts it; the code's default contrastive term moves it."""
    after = {}
    for name, over in {
        "off": {"contrastive": False},
        "alpha0": {"contrastive": True, "cl_weight": 0.0, "cl_weight_schedule": "constant"},
        "default": {"contrastive": True},
    }.items():
        tr = trainer(data, **over)
        assert tr.p.cl_views == "separate" or name == "off"
        tr.step(0)
        after[name] = {k: v.detach().clone() for k, v in tr.net.state_dict().items()}
    g_first = "0.weight"  # G's first convolution
    assert torch.equal(after["off"][g_first], after["alpha0"][g_first])
    assert not torch.equal(after["off"][g_first], after["default"][g_first])


class LoopOnly(Trainer):
    """The training loop with its label updates, validation and files stubbed out; records
    the learning rate of every iteration and every optimiser re-creation."""

    def _resume(self):
        return False

    def _init_fresh(self):
        self.start, self.stage, self.fresh, self.lrs = 0, 0, 0, []

    def _fresh_optim(self):
        self.fresh = getattr(self, "fresh", 0) + 1
        super()._fresh_optim()

    def _update_labels(self, net, stage):
        pass

    def _save(self, iteration):
        pass

    def _finish(self):
        return None

    def validate(self, net):
        return {"val_dice": 0.0, "val_dice_net": 0.0}

    def step(self, i):
        self.lrs.append(self.opt.param_groups[0]["lr"])
        return super().step(i)


def test_optimizer_reset_recreates_optimiser_and_schedule(data):
    runs = {}
    for reset in (None, 2):
        tr = trainer(data, optimizer_reset_every=reset, lr_schedule="cosine", stages=2)
        tr.__class__ = LoopOnly
        tr.run()
        runs[reset] = tr
    # four iterations of one cosine schedule; a reset every 2 re-creates it at iteration 2
    assert runs[None].fresh == 0 and runs[2].fresh == 1
    assert runs[None].lrs[2] < ENGINE["lr_max"] * 0.9
    assert runs[2].lrs[2] == pytest.approx(ENGINE["lr_max"])


def test_zero_padding_of_the_augmentation():
    img = torch.full((1, 1, 16, 16, 16), 5.0)
    img[..., 0, 0, 0] = -3.0  # the minimum
    aff = draw_affines(0.0, torch.Generator().manual_seed(0)).a1.clone()
    aff[0, 3] = 0.5  # shift by a quarter of the field of view: a border of outside samples
    grid = affine_grid(aff, img.shape[2:], img.device)
    zero, minimum = augment_image(img, grid, "zero"), augment_image(img, grid, "minimum")
    outside = zero == 0
    assert outside.any() and (minimum[outside] == -3.0).all()
    assert torch.equal(zero[~outside], minimum[~outside])


@pytest.mark.parametrize("quirk", [True, False])
def test_bn_quirk_keeps_running_statistics_on_the_first_step_of_a_stage(data, quirk):
    tr = trainer(data, bn_quirk=quirk)
    bn = next(m for m in tr.net.modules() if isinstance(m, torch.nn.BatchNorm3d))
    before = bn.running_mean.clone()
    tr.step(tr.ips)  # first iteration of stage 2
    assert torch.equal(before, bn.running_mean) == quirk
    tr.step(tr.ips + 1)  # later iterations always train BatchNorm
    assert not torch.equal(before, bn.running_mean)


def test_original_settings_row_sets_every_switch():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    from corereg.workflow.jobs import Plan

    p = Plan(cfg).method_params("bigalke_original")
    assert (p["optimizer_reset_every"], p["pad_value_aug"], p["test_adam"], p["bn_quirk"]) == (
        4000,
        "zero",
        False,
        False,
    )
    assert Plan(cfg).method_params("core")["bn_quirk"] is True


def test_contrastive_passes_run_in_the_released_codes_order():
    """fixed augmented, moving augmented, fixed original, moving original: the order in which
    the passes update BatchNorm's running statistics."""
    from corereg.training.contrastive import contrastive_loss

    torch.manual_seed(0)
    net = network.build(engine_params(contrastive=True))
    p = engine_params(**{**SMALL, "contrastive": True})
    fixed, moving = torch.randn(1, 1, 32, 32, 32), torch.randn(1, 1, 32, 32, 32) + 5.0
    seen = []
    original_conv4 = net.conv4

    def spy(x):
        seen.append(x.detach().clone())
        return original_conv4(x)

    net.conv4 = spy
    contrastive_loss(net, [(fixed, moving)], p, torch.Generator().manual_seed(1))
    assert len(seen) == 4
    assert torch.equal(seen[2], fixed) and torch.equal(seen[3], moving)  # originals last
    assert not torch.equal(seen[0], fixed) and not torch.equal(seen[1], moving)  # augmented first
    assert seen[0].mean() < 2.0 < seen[1].mean()  # fixed before moving


def test_engine_settings_come_from_the_checkpoint_and_the_given_keys(
    random_net_checkpoint, tmp_path
):
    from corereg.errors import CoreregError

    ckpt = torch.load(random_net_checkpoint, weights_only=False)
    m = Engine({"adam_iters": 5, "clamp_eval": [-0.4, 0.6]}, CPU, random_net_checkpoint)
    assert m.p.adam_iters == 5 and m.p.stages == ckpt["params"]["stages"] == 0
    assert m.dataset.clamp_eval == (-0.4, 0.6) and m.dataset.sdlogj_band is None
    # a key the checkpoint's training knew but this version does not is not an error
    old = tmp_path / "old.pt"
    torch.save({**ckpt, "params": {**ckpt["params"], "retired_key": 1}}, old)
    assert Engine({}, CPU, old).p == EngineParams.from_mapping(ckpt["params"])
    with pytest.raises(CoreregError, match=r"^engine params: unknown parameters \['adam_iter'\]"):
        Engine({"adam_iter": 5}, CPU, random_net_checkpoint)
