"""What runs differently on CUDA, exercised on the CPU: AMP scopes and the gradient scaler
(forced on with bfloat16), the Adam implementation choice, the untimed warm-up pass, and
a static check that the engine and trainers create no tensor without naming its device."""

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, engine_params
from corereg import device as devmod
from corereg.registration import network
from corereg.registration.adam import adam_impl_for
from corereg.registration.pipeline import autocast, register_pair

FACTORIES = {
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "linspace",
    "eye",
    "rand",
    "randn",
    "randint",
    "randperm",
    "normal",
    "tensor",
    "as_tensor",
}
# The engine, its training, and the learned comparison methods' trainers and networks.
DEVICE_CODE = [
    *sorted((ROOT / "src/corereg/registration").glob("*.py")),
    *sorted((ROOT / "src/corereg/training").glob("*.py")),
    *(ROOT / "src/corereg/baselines" / f for f in ("learned.py", "voxelmorph.py", "lapirn.py")),
]


def factory_calls_without_device(path: Path) -> list[str]:
    src = path.read_text()
    bad = []
    for node in ast.walk(ast.parse(src)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in FACTORIES
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
            and not any(k.arg == "device" for k in node.keywords)
        ):
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return bad


def test_every_tensor_the_engine_and_trainers_create_names_its_device():
    assert all(p.is_file() for p in DEVICE_CODE)
    bad = [b for p in DEVICE_CODE for b in factory_calls_without_device(p)]
    assert not bad, f"torch factory calls without device=: {bad}"


def test_the_static_check_finds_a_tensor_without_device(tmp_path):
    f = ROOT / "src" / "corereg" / "_probe_for_test.py"
    f.write_text("import torch\nx = torch.zeros(3)\ny = torch.ones(2, device='cpu')\n")
    try:
        assert factory_calls_without_device(f) == ["src/corereg/_probe_for_test.py:2"]
    finally:
        f.unlink()


def test_adam_implementation_follows_the_device():
    assert adam_impl_for(torch.device("cuda"), "auto") == "grid_sample"
    assert adam_impl_for(torch.device("cuda:1"), "auto") == "grid_sample"
    assert adam_impl_for(torch.device("cpu"), "auto") == "fused"
    assert adam_impl_for(torch.device("cuda"), "fused") == "fused"


def test_warm_up_only_on_cuda_unless_forced():
    assert devmod.warm_up(torch.device("cuda"), True)
    assert not devmod.warm_up(torch.device("cuda"), False)
    assert not devmod.warm_up(torch.device("cpu"), True)
    assert devmod.warm_up(torch.device("cpu"), "always")


def test_amp_is_off_on_the_cpu_and_float16_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not devmod.amp_active(cpu, True) and devmod.amp_active(cuda, True)
    assert not devmod.amp_active(cuda, False)
    assert devmod.amp_dtype(cuda) == torch.float16
    with autocast(cpu, True):
        assert not torch.is_autocast_enabled("cpu")


@pytest.fixture
def cpu_amp(monkeypatch):
    monkeypatch.setattr(devmod, "AMP_CPU_DTYPE", torch.bfloat16)


def pair():
    rng = np.random.default_rng(3)
    from scipy import ndimage

    img = ndimage.gaussian_filter(rng.normal(size=(32, 24, 32)), 2).astype(np.float32)
    fixed = torch.from_numpy(img / img.std() * 300)[None, None]
    return fixed, torch.roll(fixed, 2, dims=2)


def test_forced_amp_runs_the_networks_in_half_precision_and_the_solver_in_float32(cpu_amp):
    torch.manual_seed(0)
    net = network.FeatureNet().eval()
    fixed, moving = pair()
    seen = []
    hook = net[3].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    p = engine_params(adam_iters=3, amp=True)
    amp = register_pair(net, fixed, moving, p, generator=torch.Generator().manual_seed(0))
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # G's convolutions ran under autocast
    # the soft-argmin solver and Adam leave the scope: fields come back in float32
    assert amp.net.dtype == torch.float32 and amp.adam.dtype == torch.float32
    assert torch.isfinite(amp.adam).all()
    full = register_pair(
        net, fixed, moving, p.replace(amp=False), generator=torch.Generator().manual_seed(0)
    )
    # half precision moves the network field by a fraction of a voxel, not more
    diff = (amp.net - full.net).abs().mean() * 16
    assert 0 < float(diff) < 1.0


def test_forced_amp_trains_with_the_gradient_scaler(cpu_amp, tmp_path, monkeypatch):
    from test_training import spec

    from corereg.data.manifest import load_manifest
    from corereg.data.synthetic import generate_abdomen
    from corereg.training import selftrain

    root = tmp_path / "prep"
    generate_abdomen(root, "synth_abdomen", (32, 32, 32), (12.0, 12.0, 12.0), 3, 2, seed=3)
    scalers = []
    real_init = selftrain.Trainer._init_fresh

    def spy(self):
        real_init(self)
        scalers.append(self.scaler)

    monkeypatch.setattr(selftrain.Trainer, "_init_fresh", spy)
    s = spec(
        contrastive=True,
        stages=1,
        iters_per_stage=2,
        val_every=2,
        amp=True,
        cl_border=1,
        cl_num_samples=50,
    )
    selftrain.train(load_manifest(root), s, torch.device("cpu"), tmp_path / "out", log=print)
    assert scalers and scalers[0].is_enabled()  # the scaler of the CUDA path ran
    log = pd.read_csv(tmp_path / "out" / "train_log.csv")
    assert np.isfinite(log.loss).all() and np.isfinite(log.loss_cl).all()
