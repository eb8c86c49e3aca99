"""Shared fixtures.  ``no_residue`` (autouse) is RELIABILITY.md rule 10: every test leaves the same
threads, child processes, /dev/shm segments and open files behind as it found -- after closing
the processes backend's warm pool, whose workers outlive a run by design."""
from __future__ import annotations

import gc
import os
import threading
import time

import pytest

import fastffnn

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


@pytest.fixture(autouse=True)
def no_residue():
    """Fail the test if it leaves threads, child processes, /dev/shm segments or open files
    behind; finished runs get a bounded time (polled, not slept) to be reaped."""
    before = _snapshot()
    yield
    fastffnn.shutdown()     # the processes backend's warm pool is residue once the test is over
    deadline = time.monotonic() + RESIDUE_DEADLINE
    polls = 0
    while True:
        grown = _grown(before, _snapshot(collect=polls % 20 == 1))     # gc is slow: not every poll
        polls += 1
        if not grown or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not grown, f"the test left residue behind: {grown}"
