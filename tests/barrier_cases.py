"""The barrier suite's cases and harnesses (``tests/test_barrier.py``).

A *case* is a function ``case(barrier, party, shared, *args)`` that one party runs; it talks to the
other parties only through ``barrier`` and through ``shared`` -- counters and values in per-party
slots, so no slot is written by two parties.  A *harness* runs a case on ``parties`` parties:

* ``ThreadHarness``: one thread per party around one barrier object (``ConditionBarrier``,
  ``RLockBarrier``, ``LockPollingBarrier`` or the reference ``threading.Barrier``);
* ``ProcessHarness``: child processes, each behind the real ``PipeBarrier``, and the parent's real
  ``ProcessCoordinator`` driving the rounds and running the action -- the processes backend's
  barrier without the training around it.

Both report an ``Outcome``: whether the barrier broke, the first failure (the root cause), each
party's status and the wall time.  Nothing here sleeps to synchronise: parties wait on the barrier
or poll a shared condition with a deadline.
"""
from __future__ import annotations

import contextlib
import mmap
import multiprocessing as mp
import random
import signal
import threading
from dataclasses import dataclass
from threading import BrokenBarrierError
from time import monotonic, sleep
from types import SimpleNamespace

import numpy as np

from fastffnn.driver import Context, Failure, Plan
from fastffnn.backends._worker import PipeBarrier, portable
from fastffnn.backends.processes import ProcessCoordinator

MAX_PARTIES = 64
MAX_ROUNDS = 1000
JOIN_TIMEOUT = 45.0     # seconds a run may take before its barrier is aborted

# a party's status in ``Shared.status``
RUNNING, DONE, BROKEN, FAILED = 0, 1, 2, 3


class PartyFailed(RuntimeError):
    """What a case raises to play a failing party."""

    def __init__(self, party: int):
        super().__init__(f"party {party} failed")
        self.party = party

    def __reduce__(self):
        return type(self), (self.party,)


class ActionFailed(RuntimeError):
    """What a failing action raises."""


class Shared:
    """Per-party slots and round results over two flat buffers (a ``bytearray`` for threads, an
    anonymous shared mapping for processes, so forked children and the parent see one memory)."""

    INTS = 2 * MAX_PARTIES + 3 * MAX_PARTIES + 2 * MAX_PARTIES + 1
    FLOATS = MAX_PARTIES + MAX_ROUNDS

    def __init__(self, ints, floats):
        ints = np.frombuffer(ints, dtype=np.int64)
        floats = np.frombuffer(floats, dtype=np.float64)
        self.buffers = (ints, floats)
        P = MAX_PARTIES
        self.phase = ints[:2 * P].reshape(2, P)        # lockstep: passes through each phase
        self.arrived = ints[2 * P:3 * P]                # arrivals at the barrier
        self.status = ints[3 * P:4 * P]                 # RUNNING, DONE, BROKEN or FAILED
        self.seen = ints[4 * P:5 * P]                   # what a party saw after a wait
        self.position = ints[5 * P:7 * P].reshape(P, 2)  # (instance, epoch), as ``Context.at`` keeps
        self.actions = ints[7 * P:]                     # rounds the action ran
        self.contrib = floats[:P]                       # this round's value of each party
        self.sums = floats[P:]                          # the action's reduction of each round

    @classmethod
    def allocate(cls):
        return cls(bytearray(8 * cls.INTS), bytearray(8 * cls.FLOATS))

    def clear(self) -> None:
        for buf in self.buffers:
            buf[:] = 0
        self.position[:] = -1


def poll(predicate, timeout: float = JOIN_TIMEOUT) -> bool:
    """Wait until ``predicate()`` holds or ``timeout`` passes (a condition, not a delay)."""
    deadline = monotonic() + timeout
    while not predicate():
        if monotonic() > deadline:
            return False
        sleep(0.001)
    return True


def run_party(case, barrier, party: int, shared: Shared, args: tuple, abort: bool = True):
    """One party's run of ``case``, as ``driver.worker_loop`` runs one worker: a broken barrier is
    someone else's failure; any other exception is this party's, and it aborts the barrier
    (unless ``abort`` is False: to see that the barrier broke by itself).  Returns that exception,
    or None."""
    shared.status[party] = RUNNING
    try:
        case(barrier, party, shared, *args)
    except BrokenBarrierError:
        shared.status[party] = BROKEN
    except BaseException as exc:
        shared.status[party] = FAILED
        if abort:
            barrier.abort()
        return exc
    else:
        shared.status[party] = DONE
    return None


# -- cases (CPython Lib/test/lock_tests.py, BarrierTests) ----------------------------------------

def lockstep(barrier, party, shared, parties, passes):
    """test_barrier: nobody enters a phase before everyone has left the previous one."""
    for i in range(passes):
        shared.phase[0, party] += 1
        assert shared.phase[1, :parties].sum() == i * parties
        barrier.wait()
        shared.phase[1, party] += 1
        assert shared.phase[0, :parties].sum() == (i + 1) * parties
        barrier.wait()


def action_once(barrier, party, shared, parties, rounds):
    """test_action: after each wait, the action has run exactly once more."""
    for r in range(rounds):
        barrier.wait()
        assert shared.actions[0] == r + 1, (party, r, int(shared.actions[0]))


def count_action(shared):
    def action():
        shared.actions[0] += 1
    return action


def waits(barrier, party, shared, parties, rounds):
    """Wait ``rounds`` times, counting arrivals (the driver's ``progress``)."""
    for _ in range(rounds):
        shared.arrived[party] += 1
        barrier.wait()


def late_party(barrier, party, shared, parties, late):
    """test_default_timeout: party ``late`` arrives only after every other party saw the barrier
    break on its timeout -- then it finds the barrier broken too."""
    if party == late:
        others = [p for p in range(parties) if p != late]
        assert poll(lambda: all(shared.status[p] == BROKEN for p in others))
    else:
        shared.arrived[party] += 1
    barrier.wait()


def fail_in_round(barrier, party, shared, parties, culprit, at):
    """test_abort: ``culprit`` fails instead of arriving in round ``at``; the rest must break."""
    for r in range(at + 1):
        if party == culprit and r == at:
            raise PartyFailed(party)
        shared.arrived[party] += 1
        barrier.wait()
    raise AssertionError(f"party {party} passed round {at}, which party {culprit} never reached")


def failing_action(shared, at):
    def action():
        if shared.actions[0] == at:
            raise ActionFailed(f"action failed in round {at}")
        shared.actions[0] += 1
    return action


# -- the stress: RELIABILITY row 13 --------------------------------------------------------------

def stress_values(seed: int, rounds: int, parties: int) -> np.ndarray:
    """(rounds, parties) contributions, the same in every process."""
    return np.random.default_rng(seed).standard_normal((rounds, parties))


def stress_reference(seed: int, rounds: int, parties: int) -> np.ndarray:
    """(rounds,) sums in party order: ``cumsum`` adds strictly left to right, as the action does."""
    return np.cumsum(stress_values(seed, rounds, parties), axis=1)[:, -1]


def reduce_action(shared, parties, seed):
    """The sync action: sum every party's contribution in party order (never arrival order).
    It yields the GIL now and then, as a nogil reduction would: a barrier that let parties go
    before its action finished would then show a stale or mixed sum."""
    jitter = random.Random(seed)

    def action():
        r = shared.actions[0]
        total = 0.0
        for p in range(parties):
            if jitter.random() < 0.01:
                sleep(0)
            total += shared.contrib[p]
        shared.sums[r] = total
        shared.actions[0] = r + 1
    return action


def reduce_rounds(barrier, party, shared, parties, rounds, seed):
    """Contribute, wait, check the round's reduction; with random jitter so arrival order varies."""
    mine = stress_values(seed, rounds, parties)[:, party].tolist()
    expected = stress_reference(seed, rounds, parties).tolist()
    jitter = random.Random(seed * MAX_PARTIES + party)
    for r in range(rounds):
        u = jitter.random()
        if u < 0.1:
            sleep(u * 1e-4)
        elif u < 0.3:
            for _ in range(int(u * 200)):
                pass
        shared.contrib[party] = mine[r]
        barrier.wait()
        if shared.sums[r] != expected[r]:
            raise AssertionError(f"round {r}: reduction {shared.sums[r]!r} != reference {expected[r]!r}")
        shared.seen[party] = r + 1


# -- harnesses -----------------------------------------------------------------------------------

@dataclass
class Outcome:
    broken: bool                    # the barrier broke (a timeout, a failure, an abort, a death)
    failure: BaseException | None   # the first failure that was not a broken barrier
    status: np.ndarray              # (parties,) each party's status; a killed child stays RUNNING
    elapsed: float

    def expect_success(self) -> None:
        if self.failure is not None:
            raise self.failure
        assert not self.broken, self


class ThreadHarness:
    """Parties are threads around one barrier from ``factory(parties, action, timeout)``."""

    parties = 5                     # as CPython's BarrierTests

    def __init__(self, kind: str, factory):
        self.kind, self.factory = kind, factory
        self.shared = Shared.allocate()
        self.made = []

    def make(self, parties: int, action=None, timeout=None):
        """The factory; every barrier made is aborted at teardown."""
        barrier = self.factory(parties, action=action, timeout=timeout)
        self.made.append(barrier)
        return barrier

    def run(self, case, parties: int, rounds: int, args: tuple = (), action=None, timeout=None,
            faults: tuple = (), abort: bool = True) -> Outcome:
        assert not faults, "threads cannot be killed; faults are for ProcessHarness"
        self.shared.clear()
        barrier = self.make(parties, action, timeout)
        failures = []
        t0 = monotonic()
        threads = start_threads(lambda p: failures.append(
            run_party(case, barrier, p, self.shared, (parties,) + args, abort)), parties)
        join_threads(threads, [barrier])
        return Outcome(barrier.broken, next((f for f in failures if f is not None), None),
                       self.shared.status[:parties].copy(), monotonic() - t0)

    def close(self) -> None:
        for barrier in self.made:
            barrier.abort()


def start_threads(target, n: int) -> list:
    """Start ``target(i)`` in ``n`` threads (i = 0 .. n-1)."""
    threads = [threading.Thread(target=target, args=(i,), name=f"party-{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def join_threads(threads: list, barriers: list, timeout: float = JOIN_TIMEOUT) -> None:
    """Join every thread within ``timeout``; past it abort the barriers (so nothing can hang) and
    fail, naming the threads that were still alive."""
    deadline = monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    if alive:
        for barrier in barriers:
            barrier.abort()
        for t in threads:
            t.join(5.0)
    assert not alive, f"threads still alive after {timeout} s: {alive}"


class ChildContext:
    """What ``PipeBarrier`` needs of a worker's ``Context`` -- the plan, ``at`` and ``fire`` -- with
    the driver's own ``at`` and ``fire``, positions kept in shared memory for the parent."""

    at = Context.at
    fire = Context.fire

    def __init__(self, plan: Plan, shared: Shared):
        self.plan, self.position = plan, shared.position
        self.params = np.zeros((MAX_PARTIES, 1))
        self.cancel = threading.Event()


class ChildBarrier:
    """A case's view of ``PipeBarrier``: ``wait()`` as ``worker_loop`` calls it, after noting that
    the party is between spans at the end of the round (``ctx.at(worker, -1, epoch)``)."""

    def __init__(self, conn, plan: Plan, party: int, shared: Shared):
        self.ctx = ChildContext(plan, shared)
        self.pipe = PipeBarrier(conn, self.ctx, party)
        self.party = party

    def wait(self, timeout=None) -> None:
        assert timeout is None, "PipeBarrier has no per-call timeout: the parent keeps the run's"
        self.ctx.at(self.party, -1, self.ctx.plan.rounds[self.pipe.round][1])
        self.pipe.wait()

    def abort(self) -> None:
        self.pipe.abort()


def child_main(conn, case, plan: Plan, shared: Shared, party: int, args: tuple) -> None:
    """A party's process, as ``_worker_main`` runs a worker: the case behind a ``PipeBarrier``,
    then its failure, or "done", over the pipe (a broken barrier ends the case quietly)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send(("ready",))
    failure = run_party(case, ChildBarrier(conn, plan, party, shared), party, shared, args)
    with contextlib.suppress(OSError):
        conn.send(portable(failure) if failure is not None else ("done",))


class ForkedParty:
    """What ``ProcessCoordinator`` needs of a worker, for a forked child: its connection, its pid
    and its exit code."""

    def __init__(self, proc, conn):
        self.proc, self.conn, self.pid = proc, conn, proc.pid

    def exit_code(self, timeout: float = 1.0):
        self.proc.join(timeout)
        return self.proc.exitcode


class ProcessHarness:
    """Parties are child processes behind ``PipeBarrier``; the parent's ``ProcessCoordinator``
    drives every round and runs the action; a timer stands in for the run's watchdog (it sets
    the cancel flag, which breaks the coordinator's wait), and a broken run kills every child
    (the backend instead lets its pooled workers report, and kills only those that do not).

    Children are forked, not started as the backend starts its workers: neither side of the
    barrier depends on how the process started, and a fresh interpreter spends a second
    importing fastffnn (the backend's own tests start them).  Each
    child is forked right after the previous one's pipe end is closed, so that it holds no copy
    of another child's end."""

    parties = 3

    def __init__(self):
        self.kind = "processes"
        memory = memoryview(mmap.mmap(-1, 8 * (Shared.INTS + Shared.FLOATS)))  # MAP_SHARED: forks see it
        self.shared = Shared(memory[:8 * Shared.INTS], memory[8 * Shared.INTS:])

    def run(self, case, parties: int, rounds: int, args: tuple = (), action=None, timeout=None,
            faults: tuple = (), abort: bool = True) -> Outcome:
        """``abort`` is moot here: ``PipeBarrier.abort`` does nothing, the failure is reported."""
        self.shared.clear()
        plan = Plan(topology=None, kernel="numpy", rounds=tuple((r, r + 1) for r in range(rounds)),
                    groups=tuple((p,) for p in range(parties)), faults=tuple(faults), timeout=timeout,
                    dtype="float64", n_samples=0, n_features=0)
        # the coordinator breaks when the run's cancel flag is set: by the watchdog in a run, by
        # a timer standing in for it here
        ctx = SimpleNamespace(plan=plan, failure=Failure(), position=self.shared.position,
                              cancel=threading.Event())
        watchdog = threading.Timer(timeout, ctx.cancel.set) if timeout is not None else None
        fork = mp.get_context("fork")
        procs, conns = [], []
        broken = True
        try:
            for p in range(parties):
                parent, child = fork.Pipe()
                conns.append(parent)
                procs.append(fork.Process(target=child_main, name=f"barrier-party-{p}", daemon=True,
                                          args=(child, case, plan, self.shared, p, (parties,) + args)))
                procs[-1].start()
                child.close()
            coordinator = ProcessCoordinator(ctx, [ForkedParty(proc, conn) for proc, conn in zip(procs, conns)],
                                             action or (lambda: None))
            try:
                coordinator.start()
            except BrokenBarrierError:
                raise AssertionError(f"the children did not start: {ctx.failure.exc!r}") from None
            if watchdog is not None:
                watchdog.start()
            t0 = monotonic()
            try:
                for _ in range(rounds):
                    coordinator.wait()
                coordinator.finish()
                broken = False
            except BrokenBarrierError:
                pass
            except Exception as exc:            # the action's failure: the driver's ``coordinate``
                ctx.failure.record(exc)
            elapsed = monotonic() - t0
        finally:
            if watchdog is not None:
                watchdog.cancel()
                if watchdog.ident is not None:
                    watchdog.join()
            _reap(procs, conns, kill=broken)
        return Outcome(broken, ctx.failure.exc, self.shared.status[:parties].copy(), elapsed)

    def close(self) -> None:
        """Nothing to abort: ``run`` has reaped its children whatever happened."""


def _reap(procs: list, conns: list, kill: bool) -> None:
    """Kill (after a broken run) and join every child, close every pipe; fail if one survives."""
    for proc in procs:
        if kill and proc.is_alive():
            proc.kill()
    deadline = monotonic() + 10.0
    alive = []
    for proc in procs:
        proc.join(max(0.0, deadline - monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
            alive.append(proc.name)
        else:
            proc.close()
    for conn in conns:
        conn.close()
    assert not alive, f"child processes still alive after the run: {alive}"
