"""Cyclical self-training: loss, weights, schedule, determinism and resume."""

import math
import signal

import pandas as pd
import pytest
import torch

from conftest import ENGINE, ROOT, engine_params, kill_after_checkpoints
from corereg.config import deep_merge
from corereg.data.manifest import load_manifest
from corereg.data.synthetic import generate_abdomen
from corereg.errors import InputError
from corereg.training.selftrain import difficulty, rank_weights, registration_loss, train


def cosine_lr(i: int, ips: int, lr_max: float, lr_min: float) -> float:
    """The learning rate of iteration i under warm restarts every ``ips`` iterations."""
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * (i % ips) / ips)) / 2


SMALL = {
    "contrastive": False,
    "stages": 2,
    "iters_per_stage": 2,
    "val_every": 2,
    "val_pairs": 1,
    "adam_iters": 4,
    "label_crop_border": 2,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train") / "prep"
    generate_abdomen(root, "synth_abdomen", (32, 32, 32), (12.0, 12.0, 12.0), 3, 2, seed=3)
    return load_manifest(root)


def spec(**over):
    return {
        "params": deep_merge(ENGINE, {**SMALL, **over}),
        "seed": 7,
        "dataset": {"eval_labels": list(range(1, 14)), "clamp_eval": [-0.4, 0.6]},
    }


def test_registration_loss_known_values():
    shape = (16, 16, 16)  # full resolution; fields at half resolution 8^3, crop 2
    pred = torch.zeros(1, 3, 8, 8, 8)
    target = torch.zeros(1, 3, 8, 8, 8)
    target[:, 0] = 0.25  # x channel: 0.25 * D/2 = 2 voxels
    assert registration_loss(pred, target, shape, "epe", 2).item() == pytest.approx(1.5 * 2.0)
    assert registration_loss(pred, target, shape, "mse", 2).item() == pytest.approx(1.5**2 * 4.0)


def test_difficulty_weights_favour_small_adam_corrections():
    noadam = torch.zeros(3, 3, 8, 8, 8)
    adam = torch.zeros(3, 3, 8, 8, 8)
    adam[0] += 0.5
    adam[2] += 0.1
    err = difficulty(noadam, adam, (16, 16, 16), crop=2)
    assert err[1] == 0 and err[0] > err[2] > 0
    q = rank_weights(err)
    assert q[1] == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())
    assert q[0] == pytest.approx(torch.sigmoid(torch.tensor(-5.0)).item())
    assert q[1] > q[2] > q[0]


def test_cosine_warm_restarts_follow_the_formula():
    net = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=10, T_mult=1, eta_min=1e-5
    )
    for i in range(25):
        assert opt.param_groups[0]["lr"] == pytest.approx(cosine_lr(i, 10, 1e-3, 1e-5))
        opt.step()
        sched.step()
    assert cosine_lr(10, 10, 1e-3, 1e-5) == pytest.approx(1e-3) and math.isclose(
        cosine_lr(5, 10, 1.0, 0.0), 0.5
    )


def weights(path):
    return torch.load(path, weights_only=False)["model"]


def test_training_is_deterministic_and_logs_validation(data, tmp_path):
    a = train(data, spec(), torch.device("cpu"), tmp_path / "a", log=lambda *_: None)
    b = train(data, spec(), torch.device("cpu"), tmp_path / "b", log=lambda *_: None)
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    log = pd.read_csv(tmp_path / "a" / "train_log.csv")
    assert list(log.iteration) == [1, 2, 4]
    assert log.val_dice.between(0, 1).all()
    assert (tmp_path / "a" / "stage1.pt").is_file() and (tmp_path / "a" / "stage2.pt").is_file()
    # gradients reach G's first layer: it moved away from its initialisation
    init = torch.load(tmp_path / "a" / "stage1.pt", weights_only=False)["model"]["0.weight"]
    assert not torch.equal(init, wa["0.weight"])


def test_resume_after_a_killed_job_gives_identical_weights(data, tmp_path):
    ref = train(data, spec(), torch.device("cpu"), tmp_path / "ref", log=lambda *_: None)
    out = tmp_path / "killed"
    code = (
        "import json, sys, torch; from corereg.data.manifest import load_manifest; "
        "from corereg.training.selftrain import train; "
        f"train(load_manifest({str(data.root)!r}), json.loads(sys.argv[1]), torch.device('cpu'), {str(out)!r})"
    )
    import json

    proc = kill_after_checkpoints(code, 1, json.dumps(spec()))  # killed after stage 1
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "checkpoint.pt").is_file() and not (out / "final.pt").exists()
    assert (out / "stage1.pt").is_file()  # side files are on disk before the checkpoint
    resumed = train(data, spec(), torch.device("cpu"), out, log=lambda *_: None)
    assert not (out / "checkpoint.pt").exists()
    wr, wk = weights(ref), weights(resumed)
    assert all(torch.equal(wr[k], wk[k]) for k in wr)
    assert pd.read_csv(out / "train_log.csv").equals(
        pd.read_csv(tmp_path / "ref" / "train_log.csv")
    )


def test_resume_refuses_a_checkpoint_of_other_settings(data, tmp_path, monkeypatch):
    from corereg.training.checkpoint import Checkpoint

    class Stopped(Exception):
        pass

    save = Checkpoint.save

    def save_then_stop(self, *a, **k):
        save(self, *a, **k)
        raise Stopped

    monkeypatch.setattr(Checkpoint, "save", save_then_stop)
    with pytest.raises(Stopped):
        train(data, spec(stages=2), torch.device("cpu"), tmp_path / "x", log=lambda *_: None)
    monkeypatch.setattr(Checkpoint, "save", save)
    from corereg.errors import CoreregError

    with pytest.raises(CoreregError, match="other parameters or seed"):
        train(
            data,
            spec(stages=2, reg_loss="mse"),
            torch.device("cpu"),
            tmp_path / "x",
            log=lambda *_: None,
        )


def test_empty_training_set(tmp_path):
    root = tmp_path / "prep"
    generate_abdomen(root, "d", (16, 16, 16), (20.0, 20.0, 20.0), 2, 2, seed=0)
    m = load_manifest(root)
    m.meta["pairs"] = [p for p in m.meta["pairs"] if p["split"] == "test"]
    with pytest.raises(InputError, match="the training set is empty"):
        train(m, spec(), torch.device("cpu"), tmp_path / "m")


def test_untrained_variant_writes_the_random_network(data, tmp_path):
    messages = []
    final = train(data, spec(stages=0), torch.device("cpu"), tmp_path / "u", log=messages.append)
    assert not any("pseudo-labels" in m for m in messages)  # no label computation for stages: 0
    log = pd.read_csv(tmp_path / "u" / "train_log.csv")
    assert final.is_file() and list(log.iteration) == [0]


def test_gradients_reach_the_first_layer(data):
    from corereg.training.selftrain import Trainer, load_data

    d = load_data(data, list(range(1, 14)), 1)
    tr = Trainer(
        d, engine_params(**SMALL), 0, torch.device("cpu"), ROOT / "unused", clamp_eval=None
    )
    tr.labels = torch.zeros(len(d.train_pairs), 3, 16, 16, 16)
    tr.weights = torch.ones(len(d.train_pairs))
    tr.gens = {k: torch.Generator().manual_seed(0) for k in ("sample", "aug", "proj")}
    from corereg.registration import network

    tr.net = network.build(tr.p)
    tr._fresh_optim()
    before = tr.net[0].weight.detach().clone()
    tr.opt.step = lambda *a, **k: None  # keep the weights, inspect the gradient
    tr.step(0)
    grad = tr.net[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert torch.equal(before, tr.net[0].weight.detach())


def _one_step_gradients(d, over: dict, state=None):
    """The gradients of one CoRe training step (the weights kept), and the network state."""
    from corereg.registration import network
    from corereg.training.selftrain import Trainer

    p = engine_params(
        **{**SMALL, "contrastive": True, "cl_num_samples": 64, "cl_border": 1, **over}
    )
    tr = Trainer(d, p, 0, torch.device("cpu"), ROOT / "unused", clamp_eval=None)
    tr.labels = torch.zeros(len(d.train_pairs), 3, 16, 16, 16)
    tr.weights = torch.ones(len(d.train_pairs))
    tr.gens = {k: torch.Generator().manual_seed(0) for k in ("sample", "aug", "proj")}
    torch.manual_seed(0)
    tr.net = network.build(tr.p)
    if state is not None:
        tr.net.load_state_dict(state)
    tr._fresh_optim()
    tr.opt.step = lambda *a, **k: None
    loss = tr.step(0)
    grads = {n: q.grad.detach().clone() for n, q in tr.net.named_parameters()}
    return loss, tr.last_cl, grads


def test_split_backward_gives_the_joint_gradients(data):
    """cl_backward: split (L_reg backpropagated before the contrastive passes run) computes
    the same loss and the same gradients as one backward of L_reg + alpha L_cl."""
    from corereg.training.selftrain import load_data

    d = load_data(data, list(range(1, 14)), 1)
    loss_j, cl_j, joint = _one_step_gradients(d, {"cl_backward": "joint"})
    loss_s, cl_s, split = _one_step_gradients(d, {"cl_backward": "split"})
    assert math.isfinite(cl_j) and cl_j > 0 and cl_s == pytest.approx(cl_j, rel=1e-6)
    assert loss_s == pytest.approx(loss_j, rel=1e-6)
    assert joint.keys() == split.keys()
    for name, g in joint.items():
        scale = max(float(g.abs().max()), 1e-12)
        assert float((g - split[name]).abs().max()) <= 1e-5 * scale, name
    # and the contrastive term does contribute: without it the gradients differ
    _, _, reg_only = _one_step_gradients(d, {"contrastive": False})
    assert any(not torch.allclose(reg_only[n], joint[n], rtol=1e-3) for n in joint)


SMALL_CL = {"cl_border": 1, "cl_num_samples": 50}  # 8^3 feature grids of 32^3 images


def test_ema_update_known_answer():
    from corereg.training.selftrain import ema_update

    shadow = [torch.tensor([1.0, 2.0])]
    ema_update(shadow, [torch.tensor([3.0, 0.0])], 0.9)
    assert torch.allclose(shadow[0], torch.tensor([0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 0]))


@pytest.mark.parametrize(
    "over",
    [
        {"ema": True, "ema_decay": 0.5},
        {"contrastive": True, "cl_feature_layer": "post_relu_proj", **SMALL_CL},
        {"contrastive": True, "cl_aug": {"geometric": False, "deformable": True}, **SMALL_CL},
    ],
    ids=["ema", "post_relu_proj", "deformable"],
)
def test_code_only_options_train_deterministically_and_change_the_model(data, tmp_path, over):
    quiet = {"log": lambda *_: None}
    a = train(data, spec(**over), torch.device("cpu"), tmp_path / "a", **quiet)
    b = train(data, spec(**over), torch.device("cpu"), tmp_path / "b", **quiet)
    base = {k: v for k, v in over.items() if k in ("contrastive", *SMALL_CL)}
    ref = train(data, spec(**base), torch.device("cpu"), tmp_path / "ref", **quiet)
    wa, wb, wr = weights(a), weights(b), weights(ref)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wr[k]) for k in wa)
    if over.get("ema"):
        teacher = torch.load(tmp_path / "a" / "teacher_stage1.pt", weights_only=False)["model"]
        student = torch.load(tmp_path / "a" / "stage1.pt", weights_only=False)["model"]
        assert not torch.equal(teacher["0.weight"], student["0.weight"])
        # BatchNorm buffers are the student's, not averaged
        assert torch.equal(teacher["1.running_mean"], student["1.running_mean"])


def test_ema_training_resumes_to_identical_weights(data, tmp_path):
    import json

    over = {"ema": True, "ema_decay": 0.5}
    ref = train(data, spec(**over), torch.device("cpu"), tmp_path / "ref", log=lambda *_: None)
    out = tmp_path / "killed"
    code = (
        "import json, sys, torch; from corereg.data.manifest import load_manifest; "
        "from corereg.training.selftrain import train; "
        f"train(load_manifest({str(data.root)!r}), json.loads(sys.argv[1]), torch.device('cpu'), {str(out)!r})"
    )
    proc = kill_after_checkpoints(code, 1, json.dumps(spec(**over)))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    resumed = train(data, spec(**over), torch.device("cpu"), out, log=lambda *_: None)
    wr, wk = weights(ref), weights(resumed)
    assert all(torch.equal(wr[k], wk[k]) for k in wr)
