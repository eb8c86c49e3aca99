"""One barrier suite, run against every barrier (STYLE.md 9; CPython ``Lib/test/lock_tests.py``,
``BarrierTests``).

The ``harness`` fixture yields, per barrier, a harness whose ``make`` is the barrier factory and whose
``run`` plays a case from ``barrier_cases`` on every party: threads around ``ConditionBarrier``,
``RLockBarrier``, ``LockPollingBarrier`` and the reference ``threading.Barrier``; child processes
behind ``PipeBarrier`` with the parent's ``ProcessCoordinator`` for "processes".  A case that does
not apply to every barrier names the ones it runs on (``parametrize("harness", ..., indirect)``):
the coordinator has no arrival index, reset, repr or per-call timeout, and only processes can be
killed.  Teardown aborts every barrier made (a failing case cannot hang the run); threads and
children are joined with a deadline, and conftest's ``no_residue`` checks that none is left.
Timing asserts are loose; nothing sleeps to synchronise.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from threading import BrokenBarrierError
from time import monotonic

import numpy as np
import pytest

import barrier_cases as cases
from barrier_cases import BROKEN, DONE, FAILED, ActionFailed, PartyFailed
from fastffnn._faults import Fault
from fastffnn.barrier import ConditionBarrier, LockPollingBarrier, RLockBarrier
from fastffnn.errors import InstanceFailed
from fastffnn.backends.processes import WorkerDied

pytestmark = pytest.mark.timeout(60)

FACTORIES = {"condition": ConditionBarrier, "rlock": RLockBarrier, "lock-polling": LockPollingBarrier,
             "threading": threading.Barrier}
KINDS = [*FACTORIES, "processes"]
THREADS = list(FACTORIES)                               # barrier objects shared by threads
OURS = ["condition", "rlock", "lock-polling"]           # where fastffnn departs from CPython 3.11
threads_only = pytest.mark.parametrize("harness", THREADS, indirect=True)

# (rounds, parties) of the stress.  The library's barrier gets RELIABILITY row 13 in full; the
# reference and the benchmark variants (the same state machine) fewer rounds, to keep the suite
# fast on two cores; processes the harness's three children.
STRESS = {"condition": (1000, 64), "rlock": (100, 64), "lock-polling": (100, 64),
          "threading": (100, 64), "processes": (1000, 3)}
SEED = 20201216
TIMEOUT = 0.5       # a barrier timeout that a case waits out
LONG = 30.0         # a barrier timeout that only a hang reaches


@pytest.fixture(params=KINDS)
def harness(request):
    if request.param == "processes":
        harness = cases.ProcessHarness()
    else:
        harness = cases.ThreadHarness(request.param, FACTORIES[request.param])
    try:
        yield harness
    finally:
        harness.close()         # aborts every barrier made


@contextmanager
def threads_running(fn, n: int, *barriers):
    """Run ``fn(i)`` in ``n`` threads around the ``with`` body (CPython's ``Bunch``); on exit join
    them with a deadline, aborting ``barriers`` past it, and raise the first exception."""
    errors = []

    def target(i):
        try:
            fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = cases.start_threads(target, n)
    try:
        yield
    finally:
        cases.join_threads(threads, list(barriers))
    if errors:
        raise errors[0]


def run_threads(fn, n: int, *barriers) -> None:
    with threads_running(fn, n, *barriers):
        pass


# -- every barrier -------------------------------------------------------------------------------

def test_lockstep_once_and_ten_cycles(harness):
    """test_barrier and test_barrier_10: nobody enters a phase before all have left the last."""
    p = harness.parties
    for passes in (1, 10):
        harness.run(cases.lockstep, p, rounds=2 * passes, args=(passes,), timeout=LONG).expect_success()
        assert harness.shared.phase[:, :p].sum(axis=1).tolist() == [passes * p, passes * p]


def test_action_runs_once_per_round(harness):
    p, rounds = harness.parties, 5
    outcome = harness.run(cases.action_once, p, rounds, args=(rounds,), timeout=LONG,
                          action=cases.count_action(harness.shared))
    outcome.expect_success()
    assert harness.shared.actions[0] == rounds


def test_single_party(harness):
    harness.run(cases.waits, 1, rounds=2, args=(2,), timeout=LONG).expect_success()
    assert harness.shared.arrived[0] == 2
    if harness.kind in THREADS:                 # CPython's test_single_thread, as it is
        barrier = harness.make(1)
        assert barrier.wait() == 0
        assert barrier.wait() == 0


def test_default_timeout_breaks_for_all(harness):
    """One party is late: the others break on the barrier's own timeout (for processes: on the
    cancel flag that the run's watchdog -- here a timer -- sets, and the harness kills them), and
    the late one finds it broken."""
    p, late = harness.parties, harness.parties // 2
    outcome = harness.run(cases.late_party, p, rounds=1, args=(late,), timeout=TIMEOUT)
    assert outcome.broken and outcome.failure is None, outcome
    assert 0.6 * TIMEOUT <= outcome.elapsed < 20 * TIMEOUT, outcome
    assert [q for q in range(p) if harness.shared.arrived[q] == 0] == [late]
    if harness.kind != "processes":             # children are killed once the parent breaks
        assert outcome.status.tolist() == [BROKEN] * p


def test_party_failure_breaks_for_all(harness):
    """test_abort, as the driver does it: a failing party aborts the barrier (threads) or reports
    its exception over its pipe (processes); everyone else is released with a broken barrier, and
    the run's root cause is that party's exception."""
    p, culprit = harness.parties, harness.parties // 2
    outcome = harness.run(cases.fail_in_round, p, rounds=2, args=(culprit, 1), timeout=LONG)
    assert outcome.broken, outcome
    assert isinstance(outcome.failure, PartyFailed) and outcome.failure.party == culprit, outcome
    assert outcome.elapsed < 10, outcome    # promptly, not at the timeout
    if harness.kind != "processes":
        assert outcome.status.tolist() == [FAILED if q == culprit else BROKEN for q in range(p)]


def test_action_failure_breaks_and_propagates(harness):
    """An exception in the action breaks the barrier for all and propagates from the party that
    ran it (for processes: from the coordinator's wait); the round never completes.  The failing
    party does not abort the barrier here, so the others are released by the barrier alone."""
    p = harness.parties
    outcome = harness.run(cases.waits, p, rounds=3, args=(3,), timeout=LONG, abort=False,
                          action=cases.failing_action(harness.shared, at=1))
    assert outcome.broken and isinstance(outcome.failure, ActionFailed), outcome
    assert harness.shared.actions[0] == 1
    assert outcome.elapsed < 10, outcome
    if harness.kind != "processes":
        assert sorted(outcome.status.tolist()) == [BROKEN] * (p - 1) + [FAILED]


def test_stress_reduction_matches_reference(harness):
    """RELIABILITY row 13: many rounds, random jitter, no deadlock; the action's reduction in
    party order equals a numpy reference every round, and every party saw it."""
    rounds, parties = STRESS[harness.kind]
    outcome = harness.run(cases.reduce_rounds, parties, rounds, args=(rounds, SEED), timeout=LONG,
                          action=cases.reduce_action(harness.shared, parties, SEED))
    outcome.expect_success()
    assert harness.shared.actions[0] == rounds
    np.testing.assert_array_equal(harness.shared.sums[:rounds],
                                  cases.stress_reference(SEED, rounds, parties))
    assert (harness.shared.seen[:parties] == rounds).all()
    assert (outcome.status == DONE).all()


# -- processes: a party that dies ----------------------------------------------------------------

@pytest.mark.parametrize("harness", ["processes"], indirect=True)    # a thread cannot be killed
def test_killed_party_breaks_promptly(harness):
    """RELIABILITY rows 4-5: a child SIGKILLed inside the sync section (arrived, verdict not yet
    received) is seen at once through its connection's end-of-file -- not at the timeout -- and
    named."""
    p, victim, epoch = harness.parties, 1, 2
    outcome = harness.run(cases.waits, p, rounds=5, args=(5,), timeout=LONG,
                          faults=(Fault(victim, epoch, "sync", "kill"),))
    assert outcome.broken and outcome.elapsed < 10, outcome
    failure = outcome.failure
    assert isinstance(failure, InstanceFailed), outcome
    assert (failure.instance, failure.epoch) == (victim, epoch)       # where the fault fired
    assert isinstance(failure.cause, WorkerDied) and "SIGKILL" in str(failure.cause)


# -- barrier objects: CPython's cases that use the arrival index, reset, abort or repr ----------

@threads_only
def test_wait_returns_arrival_index(harness):
    p = harness.parties
    ran_action = []
    barrier = harness.make(p, action=lambda: ran_action.append(threading.get_ident()), timeout=LONG)
    got = {}

    def party(i):
        got[i] = barrier.wait(), threading.get_ident()

    run_threads(party, p, barrier)
    assert sorted(index for index, _ in got.values()) == list(range(p))
    # the last arrival (index parties-1) is the one that ran the action
    assert [tid for index, tid in got.values() if index == p - 1] == ran_action


def abort_in_second_round(barrier, passed: list, broken: list) -> None:
    """CPython's abort pattern: the party that arrived at index parties // 2 aborts instead of
    waiting again, so every other party is released with a broken barrier."""
    try:
        if barrier.wait() == barrier.parties // 2:
            raise RuntimeError
        barrier.wait()
        passed.append(True)
    except BrokenBarrierError:
        broken.append(True)
    except RuntimeError:
        barrier.abort()


@threads_only
def test_abort(harness):
    p = harness.parties
    barrier = harness.make(p, timeout=LONG)
    passed, broken = [], []
    run_threads(lambda _: abort_in_second_round(barrier, passed, broken), p, barrier)
    assert (len(passed), len(broken), barrier.broken) == (0, p - 1, True)


@threads_only
def test_reset(harness):
    p = harness.parties
    barrier = harness.make(p, timeout=LONG)
    passed, broken, again = [], [], []

    def party(_):
        if barrier.wait() == p // 2:
            assert cases.poll(lambda: barrier.n_waiting >= p - 1)     # all the others are in
            barrier.reset()
        else:
            try:
                barrier.wait()
                passed.append(True)
            except BrokenBarrierError:
                broken.append(True)
        barrier.wait()          # and the barrier works again
        again.append(True)

    run_threads(party, p, barrier)
    assert (len(passed), len(broken), len(again)) == (0, p - 1, p)
    assert not barrier.broken and barrier.n_waiting == 0


@threads_only
def test_abort_and_reset(harness):
    p = harness.parties
    barrier, between = harness.make(p, timeout=LONG), harness.make(p, timeout=LONG)
    passed, broken, again = [], [], []

    def party(_):
        abort_in_second_round(barrier, passed, broken)
        # everyone has left before the reset, and nobody enters before it
        if between.wait() == p // 2:
            barrier.reset()
        between.wait()
        barrier.wait()
        again.append(True)

    run_threads(party, p, barrier, between)
    assert (len(passed), len(broken), len(again)) == (0, p - 1, p)


@threads_only
def test_per_call_timeout(harness):
    """test_timeout: a shorter timeout given to ``wait`` wins over the barrier's default."""
    p = harness.parties
    barrier = harness.make(p, timeout=LONG)
    broken = []

    def party(_):
        if barrier.wait() == p // 2:
            assert cases.poll(lambda: len(broken) == p - 1)    # late until the others gave up
        with pytest.raises(BrokenBarrierError):
            barrier.wait(TIMEOUT)
        broken.append(True)

    t0 = monotonic()
    run_threads(party, p, barrier)
    assert 0.6 * TIMEOUT <= monotonic() - t0 < LONG / 2
    assert barrier.broken


@threads_only
def test_repr(harness):
    barrier = harness.make(3)
    name = type(barrier).__name__
    assert name in repr(barrier) and "waiters=0/3" in repr(barrier)
    with threads_running(lambda _: barrier.wait(LONG), 2, barrier):
        assert cases.poll(lambda: barrier.n_waiting >= 2)
        assert "waiters=2/3" in repr(barrier)
        barrier.wait(LONG)
    assert "waiters=0/3" in repr(barrier)
    barrier.abort()
    assert name in repr(barrier) and "broken" in repr(barrier)


@pytest.mark.parametrize("harness", OURS, indirect=True)    # CPython 3.11 accepts parties < 1
def test_parties_must_be_positive(harness):
    for parties in (0, -1):
        with pytest.raises(ValueError, match=f"parties must be >= 1. Got {parties} instead."):
            harness.make(parties)


@pytest.mark.parametrize("harness", OURS, indirect=True)    # CPython's leaves the others waiting
def test_interrupted_wait_breaks_for_all(harness):
    """An exception that interrupts a waiting party (Ctrl-C) breaks the barrier at once for the
    others, instead of leaving them to their timeout (fastffnn's barriers; CPython's does not)."""
    assert threading.current_thread() is threading.main_thread()
    barrier = harness.make(3, timeout=LONG)
    released = []

    class Interrupted(Exception):
        pass

    def interrupt(signum, frame):
        raise Interrupted

    def party(i):
        if i == 0:
            with pytest.raises(BrokenBarrierError):
                barrier.wait()
            released.append(monotonic())
        else:       # once the main thread and party 0 wait, interrupt the main thread
            assert cases.poll(lambda: barrier.n_waiting == 2)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        with threads_running(party, 2, barrier):
            t0 = monotonic()
            with pytest.raises(Interrupted):
                barrier.wait()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert barrier.broken
    assert len(released) == 1 and released[0] - t0 < LONG / 3
