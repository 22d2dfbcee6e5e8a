"""A real single-node SLURM cluster on this machine, for the ``slurm`` tests.

``SlurmCluster(workdir).up()`` installs Debian's ``slurmctld slurmd slurm-client
munge`` when they are missing, starts a private ``munged`` and both Slurm daemons
with two fake GPUs (character devices made with ``mknod``, so jobs that ask for
a GPU get ``CUDA_VISIBLE_DEVICES``), and waits until the node is idle.  ``down()``
cancels every job, stops the daemons by the PIDs it recorded and removes only
the files it wrote.  The Slurm configuration must live at /etc/slurm/slurm.conf
(the SLURM executor's job step drops ``SLURM_CONF``); a configuration there that
this module did not write is never touched: the cluster refuses to start.

    python tests/slurm_cluster.py up|down|status WORKDIR     # by hand
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import debian

MARKER = "# written by corereg tests/slurm_cluster.py"
ETC = Path("/etc/slurm")
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
PARTITION = "debug"
CPU_PARTITION = "cpu"  # the same node again: a site's CPU partition, for the override test
GPUS = 2


class ClusterError(RuntimeError):
    pass


def _ours(path: Path) -> bool:
    try:
        return path.read_text().startswith(MARKER)
    except OSError:
        return False


def missing_packages() -> list[str]:
    tools = {
        "slurmctld": "slurmctld",
        "slurmd": "slurmd",
        "sbatch": "slurm-client",
        "munged": "munge",
    }
    return sorted(
        {
            pkg
            for tool, pkg in tools.items()
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
        }
    )


def install_packages() -> None:
    """apt-get the Debian packages (root only; idempotent)."""
    todo = missing_packages()
    if not todo:
        return
    try:
        debian.install(PACKAGES)
    except debian.InstallError as exc:
        raise ClusterError(str(exc)) from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4000


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    def __init__(self, workdir: Path | str):
        self.dir = Path(workdir).resolve()
        self.host = socket.gethostname().split(".")[0]
        self.conf, self.gres = ETC / "slurm.conf", ETC / "gres.conf"
        self.mem_mb = int(_mem_mb() * 0.8)
        self.cpus = os.cpu_count() or 1

    # -- files ---------------------------------------------------------------------
    def _write_configs(self) -> None:
        for path in (self.conf, self.gres):
            if path.exists() and not _ours(path):
                raise ClusterError(
                    f"{path} exists and was not written by this fixture; not touching it"
                )
        d = self.dir
        for sub in ("state", "spool", "munge"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "munge", 0o700)
        for k in range(GPUS):
            dev = d / f"fakegpu{k}"
            if not dev.exists():
                subprocess.run(["mknod", str(dev), "c", "1", "3"], check=True)
        ETC.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""{MARKER}
ClusterName=corereg-test
SlurmctldHost={self.host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
GresTypes=gpu
NodeName={self.host} CPUs={self.cpus} RealMemory={self.mem_mb} Gres=gpu:testgpu:{GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
PartitionName={CPU_PARTITION} Nodes={self.host} Default=NO MaxTime=INFINITE State=UP
""")
        self.gres.write_text(f"""{MARKER}
AutoDetect=off
NodeName={self.host} Name=gpu Type=testgpu File={d}/fakegpu[0-{GPUS - 1}]
""")

    # -- daemons -------------------------------------------------------------------
    def _munge(self) -> None:
        m = self.dir / "munge"
        key = m / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o400)
        subprocess.run(
            [
                _sbin("munged"),
                "--force",
                f"--socket={m}/munge.socket",
                f"--key-file={key}",
                f"--pid-file={m}/munged.pid",
                f"--log-file={m}/munged.log",
                f"--seed-file={m}/munged.seed",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def node_state(self) -> str:
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=10
        )
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def up(self, timeout: float = 60) -> SlurmCluster:
        install_packages()
        if self.running():
            return self
        self._write_configs()
        self._munge()
        for daemon in ("slurmctld", "slurmd"):
            proc = subprocess.run(
                [_sbin(daemon), "-f", str(self.conf)], capture_output=True, text=True, timeout=30
            )
            if proc.returncode != 0:
                self.down()
                raise ClusterError(
                    f"{daemon} did not start: {proc.stderr.strip()}\n{self.log_tail()}"
                )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            state = self.node_state()
            if state.startswith("idle") or state.startswith("mix"):
                return self
            time.sleep(0.5)
        tail = self.log_tail()
        self.down()
        raise ClusterError(f"the SLURM node did not become idle within {timeout:.0f} s\n{tail}")

    def running(self) -> bool:
        return (
            _ours(self.conf) and self._pid("slurmctld.pid") is not None and self.node_state() != ""
        )

    def _pid(self, name: str) -> int | None:
        for path in (self.dir / name, self.dir / "munge" / name):
            try:
                pid = int(path.read_text().split()[0])
                os.kill(pid, 0)
                return pid
            except (OSError, ValueError, IndexError):
                continue
        return None

    def log_tail(self, n: int = 2000) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.dir / name
            if path.exists():
                out.append(f"--- {name}\n{path.read_text()[-n:]}")
        return "\n".join(out)

    def down(self) -> None:
        """Cancel all jobs, stop the daemons this fixture started, remove its files."""
        if _ours(self.conf) and shutil.which("scancel"):
            subprocess.run(["scancel", "--full", "--user=root"], capture_output=True, timeout=30)
        for name in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            pid = self._pid(name)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        for path in (self.conf, self.gres):
            if _ours(path):
                path.unlink()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("up", "down", "status"):
        print(__doc__)
        return 2
    cluster = SlurmCluster(argv[2])
    if argv[1] == "up":
        cluster.up()
        print(
            f"SLURM cluster up: node {cluster.host}, partitions {PARTITION} and {CPU_PARTITION},"
            f" {GPUS} fake GPUs"
        )
    elif argv[1] == "down":
        cluster.down()
        print("SLURM cluster down")
    else:
        print("running" if cluster.running() else "not running")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
