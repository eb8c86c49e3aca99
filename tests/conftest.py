"""Shared fixtures.  ``no_residue`` (autouse) is RELIABILITY.md rule 10: every test leaves the same
threads, child processes, /dev/shm segments and open files behind as it found."""
from __future__ import annotations

import gc
import os
import threading
import time

import pytest

from residue import child_pids, shm_segments

RESIDUE_DEADLINE = 10.0     # seconds a finished run's threads/children may take to be gone

def _snapshot(collect: bool = False) -> dict:
    import multiprocessing
    multiprocessing.active_children()       # reaps multiprocessing children that have exited
    if collect:
        gc.collect()                        # an exception's traceback may still hold mappings
    return {"threads": {t.ident for t in threading.enumerate() if t.is_alive()},
            "children": child_pids(),
            "segments": shm_segments(),
            "fds": len(os.listdir("/proc/self/fd"))}


def _grown(before: dict, after: dict) -> dict:
    grown = {key: sorted(after[key] - before[key]) for key in ("threads", "children", "segments")}
    grown["fds"] = after["fds"] - before["fds"] if after["fds"] > before["fds"] else []
    return {key: value for key, value in grown.items() if value}


@pytest.fixture(scope="session", autouse=True)
def _resource_tracker():
    """multiprocessing's resource tracker is one long-lived child per interpreter, started by the
    first spawn; start it up front so it is part of every test's "before"."""
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()
    yield


@pytest.fixture(autouse=True)
def no_residue():
    """Fail the test if it leaves threads, child processes, /dev/shm segments or open files
    behind; finished runs get a bounded time (polled, not slept) to be reaped."""
    before = _snapshot()
    yield
    deadline = time.monotonic() + RESIDUE_DEADLINE
    polls = 0
    while True:
        grown = _grown(before, _snapshot(collect=polls % 20 == 1))     # gc is slow: not every poll
        polls += 1
        if not grown or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not grown, f"the test left residue behind: {grown}"
