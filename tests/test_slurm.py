"""The SLURM profile on a real (single-node) SLURM cluster: ``tests/slurm_cluster.py``.

Runs the tiny preset through ``profiles/slurm`` with the executor plugin, the way a
cluster user would, with only what this machine forces changed in a copy of the
profile (no conda channels here; the test cluster's GPU partition is ``debug``), and
with the profile's commented CPU-partition block switched on as a site would, so the
jobs that need no GPU run in the cluster's second partition, ``cpu``.
"""

import os
import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import BIN, ROOT
from slurm_cluster import (
    CPU_PARTITION,
    PARTITION,
    ClusterError,
    SlurmCluster,
    missing_packages,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if missing_packages() and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        pytest.skip(f"SLURM packages {missing_packages()} missing and not installable here")
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.up()
    except ClusterError as exc:
        pytest.fail(f"could not start the test SLURM cluster: {exc}")
    yield c
    c.down()


def test_cluster_grants_gpus_only_when_asked(cluster):
    def run(*args):
        return subprocess.run(
            [
                "srun",
                "-p",
                PARTITION,
                "-t",
                "1",
                *args,
                "bash",
                "-c",
                "echo ${CUDA_VISIBLE_DEVICES-unset}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()

    assert run("--gpus=1") in ("0", "1")
    assert run() == "unset"


def test_tiny_preset_through_the_slurm_profile(cluster, tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    text = (ROOT / "profiles/slurm/config.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert cfg["executor"] == "slurm" and cfg["rerun-incomplete"] and cfg["retries"] >= 1
    cfg["use-conda"] = False  # no conda channel can be reached from the test machines
    cfg["default-resources"]["slurm_partition"] = PARTITION
    # the CPU-partition recipe as the profile documents it, uncommented
    block = re.search(r"^# set-resources:\n(?:#   .*\n)+", text, re.M)
    assert block, "profiles/slurm/config.yaml lost its commented set-resources block"
    cpu_rules = yaml.safe_load("\n".join(line[2:] for line in block.group(0).splitlines()))
    cpu_rules = cpu_rules["set-resources"]
    assert {"prepare", "evaluate", "table", "figure"} <= set(cpu_rules)
    assert all(v == {"slurm_partition": CPU_PARTITION} for v in cpu_rules.values()), cpu_rules
    cfg["set-resources"] = cpu_rules
    cfg["slurm-init-seconds-before-status-checks"] = 2
    cfg["seconds-between-status-checks"] = 5
    (profile / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = tmp_path / "results"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "30",
        "1200",
        str(BIN / "snakemake"),
        "--profile",
        str(profile),
        "--configfile",
        "workflow/presets/tiny.yaml",
        "tests/slurm/override.yaml",
        "--config",
        f"results={res}",
        f"data_root={tmp_path / 'data'}",
        "--jobs",
        "4",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1300)
    assert proc.returncode == 0, (
        f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}\n{cluster.log_tail()}"
    )
    assert re.search(r"Job \d+ has been submitted with SLURM jobid \d+", proc.stderr + proc.stdout)
    for name in ("table1", "table2", "table3"):
        table = pd.read_csv(res / "tables" / f"{name}.csv")
        ran = table[table.status == "ok"]
        assert {"bigalke", "core"} <= set(ran.method), (name, table[["row", "status"]])
    assert (res / "figures" / "fig4a.png").is_file() and (res / "report" / "index.html").is_file()
    # every step ran inside a SLURM job; GPU rules got a GPU in the GPU partition, CPU rules
    # none in the CPU partition, CPU-only methods none in the GPU partition
    cpu_methods = ("/initial/", "/niftyreg/", "/deeds/")
    logs = res / "logs"
    gpu_logs = [
        *(logs / "train").rglob("*.log"),
        *(
            p
            for p in (logs / "register").rglob("*.log")
            if not any(m in p.as_posix() for m in cpu_methods)
        ),
    ]
    cpu_rule_logs = [
        *(logs / "prepare").rglob("*.log"),
        *(logs / "evaluate").rglob("*.log"),
        *(logs / "report").glob("table*.log"),
        *(logs / "report").glob("fig*.log"),
    ]
    cpu_method_logs = [
        p for p in (logs / "register").rglob("*.log") if any(m in p.as_posix() for m in cpu_methods)
    ]
    assert len(gpu_logs) >= 15 and len(cpu_rule_logs) >= 10 and len(cpu_method_logs) >= 3
    expected = [
        *((log, r"CUDA_VISIBLE_DEVICES=[01]\b", PARTITION) for log in gpu_logs),
        *((log, "CUDA_VISIBLE_DEVICES=<unset>", CPU_PARTITION) for log in cpu_rule_logs),
        *((log, "CUDA_VISIBLE_DEVICES=<unset>", PARTITION) for log in cpu_method_logs),
    ]
    for log, gpus, partition in expected:
        head = log.read_text().splitlines()[0]
        assert re.search(rf"SLURM job \d+ in partition {partition},", head), (log, head)
        assert re.search(gpus, head), (log, head)
