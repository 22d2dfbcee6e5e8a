"""Several GPUs on one workstation: concurrent jobs each claim their own device (simulated
GPUs: the claim is lock files, the same code path as with real devices)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from conftest import ROOT

CLAIM = """
import sys, torch
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 3
from corereg.device import resolve_device
print(resolve_device(sys.argv[1]), flush=True)
sys.stdin.readline()  # hold the GPU until the test lets go
"""


def _start(tmp_path, name="auto"):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COREREG_GPU_LOCKS": str(tmp_path)}
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_concurrent_jobs_get_distinct_gpus_and_a_released_one_is_reused(tmp_path):
    jobs = [_start(tmp_path) for _ in range(3)]
    got = [j.stdout.readline().strip() for j in jobs]
    assert sorted(got) == ["cuda:0", "cuda:1", "cuda:2"]
    # a fourth job finds every GPU held: it shares one and says so
    extra = _start(tmp_path, "cuda")
    line = extra.stdout.readline()
    assert "all 3 GPUs are held" in line
    assert extra.stdout.readline().strip().startswith("cuda:")
    extra.communicate("\n", timeout=60)
    # the job on cuda:1 ends: the next job gets that GPU
    done = jobs[got.index("cuda:1")]
    done.communicate("\n", timeout=60)
    again = _start(tmp_path)
    assert again.stdout.readline().strip() == "cuda:1"
    for j in [*jobs, again]:
        if j.poll() is None:
            j.communicate("\n", timeout=60)


def test_one_visible_gpu_or_a_named_one_needs_no_claim(monkeypatch, tmp_path):
    from corereg import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("COREREG_GPU_LOCKS", str(tmp_path))
    assert device.resolve_device("auto") == torch.device("cuda", 0)
    assert device.resolve_device("cuda:0") == torch.device("cuda:0")
    assert list(tmp_path.iterdir()) == []  # a scheduler's one GPU per job: nothing to claim
