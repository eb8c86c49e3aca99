"""Probes of what a process has running and open: threads, child processes, fastffnn's /dev/shm
segments, file descriptors.  ``conftest.no_residue`` and the fault tests share them."""
from __future__ import annotations

import os

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
