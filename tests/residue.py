"""Probes of what a process has running and open: threads, child processes, fastffnn's /dev/shm
segments, file descriptors.  ``conftest.no_residue`` and the fault tests share them."""
from __future__ import annotations

import os
import time

SHM_DIR = "/dev/shm"


def child_pids(pid: int | None = None) -> set:
    """Pids of the children of ``pid`` (default: this process), zombies included: a child
    nobody reaped is residue too."""
    pid = os.getpid() if pid is None else pid
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue        # gone meanwhile
        if ppid == pid:
            children.add(int(entry))
    return children


def pid_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an exited orphan may wait for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def shm_segments(pid: int | None = None) -> set:
    """fastffnn's /dev/shm segments created by ``pid`` (default: this process).  Other test runs
    may share the machine, so only this process's own segments are ours to check."""
    prefix = f"fastffnn_{os.getpid() if pid is None else pid}_"
    return {e for e in os.listdir(SHM_DIR) if e.startswith(prefix)} if os.path.isdir(SHM_DIR) else set()


# -- Ray: a run's actors and a cluster's node daemons ----------------------------------------

def actor_processes() -> set:
    """Pids of this machine's processes running one of the backend's actors."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"InstanceGroup" in f.read():
                        pids.add(int(entry))
            except OSError:
                pass
    return pids


def no_actor_left(seconds: float = 30.0) -> bool:
    """Poll until no actor process of a run is left (ray.kill is asynchronous)."""
    deadline = time.monotonic() + seconds
    while actor_processes():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def ray_daemons() -> set:
    """Pids of the children of this process that are Ray node daemons (raylet, GCS)."""
    return {pid for pid in child_pids() if _cmdline(pid) and any(
        name in _cmdline(pid) for name in (b"raylet", b"gcs_server"))}


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
