"""One allreduce round -- every party contributes one float, the barrier's action sums them -- for
2 to 64 parties: fastffnn's ConditionBarrier, CPython's threading.Barrier, and the report's
Lock-polling and RLock variants (fastffnn.barrier's benchmark-only classes); and, beside them at 2
parties, the floor of any blocking round on this machine: two threads handing a Lock back and forth.

``parties - 1`` helper threads loop on the barrier; the benchmark's thread is the last party, so one
timed call is one full round (arrive, sum, release, drain).  The process coordinator is measured
through a processes run of many one-epoch rounds of a one-neuron network: ``round_s`` in its
``extra_info`` is the workers' barrier wait per round (arrive, the parent's sync, go), which leaves
handing the run to the workers out; the timed call itself is the whole run.
"""
from __future__ import annotations

import contextlib
import threading
from threading import BrokenBarrierError

import numpy as np
import pytest

import fastffnn as ff
import fastffnn.barrier

from .common import CORES, busy_seconds, worker_groups

PARTIES = (2, 4, 8, 16, 32, 64)
BARRIERS = ("ConditionBarrier", "threading.Barrier", "RLockBarrier", "LockPollingBarrier")
TIMEOUT = 60.0      # a lost party fails the benchmark instead of hanging it


def barrier_class(name: str):
    if name == "threading.Barrier":
        return threading.Barrier
    return getattr(fastffnn.barrier, name)


class Allreduce:
    """``parties - 1`` helper threads looping on one barrier whose action sums one float per party;
    ``round()`` is the last party's call."""

    def __init__(self, barrier_type, parties: int):
        self.values = [0.0] * parties
        self.total = None
        self.barrier = barrier_type(parties, action=self._sum, timeout=TIMEOUT)
        self.helpers = [threading.Thread(target=self._loop, args=(i,), daemon=True, name=f"party-{i}")
                        for i in range(1, parties)]
        for t in self.helpers:
            t.start()

    def _sum(self) -> None:
        self.total = sum(self.values)

    def _loop(self, i: int) -> None:
        try:
            while True:
                self.values[i] = float(i)
                self.barrier.wait()
        except BrokenBarrierError:
            pass        # closed

    def round(self) -> None:
        self.values[0] = 0.0
        self.barrier.wait()

    def close(self) -> None:
        self.barrier.abort()
        for t in self.helpers:
            t.join(TIMEOUT)


@pytest.fixture
def allreduce():
    made = []

    def make(barrier_type, parties: int) -> Allreduce:
        made.append(Allreduce(barrier_type, parties))
        return made[-1]

    yield make
    for a in made:          # abort, so that a failed benchmark never leaves threads waiting
        a.close()


@pytest.mark.parametrize("parties", PARTIES, ids=lambda p: f"parties-{p}")
@pytest.mark.parametrize("name", BARRIERS)
def test_barrier_round(benchmark, allreduce, name, parties):
    reduce = allreduce(barrier_class(name), parties)
    for _ in range(3):
        reduce.round()
        assert reduce.total == parties * (parties - 1) / 2
    benchmark.group = f"barrier-parties-{parties}"
    benchmark.extra_info.update(kind="barrier", label=name, parties=parties, cores=CORES,
                                action="sum of one float per party")
    benchmark(reduce.round)
    assert not reduce.barrier.broken


class LockHandoff:
    """Two threads handing two Locks back and forth: each round wakes the helper and is woken by
    it, with no state and no action -- two thread wake-ups and two GIL handoffs, which every
    blocking 2-party round of Python threads also pays."""

    def __init__(self):
        self.ping, self.pong = threading.Lock(), threading.Lock()
        self.ping.acquire()
        self.pong.acquire()
        self.open = True
        self.helper = threading.Thread(target=self._loop, daemon=True, name="handoff")
        self.helper.start()

    def _loop(self) -> None:
        while self.ping.acquire(timeout=TIMEOUT) and self.open:
            self.pong.release()

    def round(self) -> None:
        self.ping.release()
        if not self.pong.acquire(timeout=TIMEOUT):
            raise TimeoutError("the handoff helper did not answer")

    def close(self) -> None:
        self.open = False
        with contextlib.suppress(RuntimeError):     # unlocked already if a round timed out
            self.ping.release()
        self.helper.join(TIMEOUT)


def test_lock_handoff_floor(benchmark):
    handoff = LockHandoff()
    try:
        for _ in range(3):
            handoff.round()
        benchmark.group = "barrier-parties-2"
        benchmark.extra_info.update(kind="barrier", label="Lock handoff (floor)", parties=2, cores=CORES,
                                    action="none", note="two wake-ups, no barrier state: the floor")
        benchmark(handoff.round)
    finally:
        handoff.close()
    assert not handoff.helper.is_alive()


# -- the process coordinator, through fastffnn.train ------------------------------------------------

TINY_X = np.linspace(-1.0, 1.0, 8)[:, None]
TINY_Y = np.arange(8) % 2


def _rounds(workers: int, rounds: int) -> ff.TrainResult:
    # one instance per worker process, one epoch of a 1-1-1 network per round: all coordination
    return ff.train(TINY_X, TINY_Y, hidden=(1,), instances=workers, epochs=rounds, sync_every=1,
                    sync="average", backend="processes", workers=workers, timeout=TIMEOUT)


@pytest.mark.parametrize("workers", [pytest.param(2, id="parties-2"),
                                     pytest.param(4, id="parties-4", marks=pytest.mark.timed_only)])
def test_process_coordinator_round(benchmark, timed, workers):
    rounds = 1000 if timed else 20
    benchmark.group = "barrier-processes"
    benchmark.extra_info.update(kind="barrier", label="ProcessCoordinator", parties=workers, cores=CORES,
                                rounds_per_call=rounds, action="the train sync: finite check, mean loss, "
                                "average of the last layer")
    if timed:   # compile first (here, and into the cache the workers load): the timed runs only coordinate
        assert len(_rounds(workers, 2).history.global_loss) == 2
    result = benchmark.pedantic(_rounds, args=(workers, rounds), rounds=3 if timed else 1)
    assert np.isfinite(result.history.losses).all() and len(result.history.global_loss) == rounds
    # a worker waits from its arrival until the parent's go: one round trip as the parties see it,
    # free of the cost of handing the run to the workers and collecting it
    groups = worker_groups(workers, workers)
    waited = float(np.mean([result.timing.barrier_wait[g[0]] for g in groups]))
    benchmark.extra_info["round_s"] = waited / rounds
    benchmark.extra_info["overhead_s"] = result.timing.wall - busy_seconds(result, groups)
    benchmark.extra_info["note"] = f"worker-side wait; outside it {benchmark.extra_info['overhead_s']:.3f} s"
