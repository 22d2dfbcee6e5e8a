"""Installing Debian packages for the tests that need a system tool (SLURM, Chromium).

Only as root with apt-get; :func:`can_install` says whether that holds.  Two habits keep
one test's install from breaking the next one's:

- a package database left half-configured (an install that was killed, an image taken
  mid-upgrade) refuses every install until ``dpkg --configure -a`` finishes the pending
  work, which is what apt itself asks for and does nothing when nothing is pending; it
  runs before every try, and each step is tried three times;
- apt is never killed part-way: the time limit is a guard against a hang (an hour), not a
  measure of a slow mirror, because a killed install is what leaves dpkg interrupted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

HANG_GUARD_S = 3600
TRIES = 3


class InstallError(RuntimeError):
    pass


def can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)


def install(packages: list[str]) -> None:
    """``apt-get install`` *packages* (after ``apt-get update``); raises InstallError."""
    if not can_install():
        raise InstallError(
            f"Debian packages {packages} are missing and cannot be installed here "
            "(needs root and apt-get)"
        )
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    repair = ["dpkg", "--force-confdef", "--force-confold", "--configure", "-a"]
    for cmd in (
        ["apt-get", *lock, "update", "-qq"],
        ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        for attempt in range(TRIES):
            _run(repair)
            proc = _run(cmd)
            if proc.returncode == 0:
                break
            time.sleep(5 * (attempt + 1))
        else:
            raise InstallError(
                f"{' '.join(cmd)} failed {TRIES} times:\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
