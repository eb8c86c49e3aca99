"""The thread barrier: CPython's ``threading.Barrier`` with the sync reduction as its action.

States (as in CPython ``Lib/threading.py``):

* FILLING   - parties are arriving; the last one to arrive runs ``action`` and flips to DRAINING.
* DRAINING  - the parties of this generation are leaving ``wait``; the last to leave flips back
              to FILLING, so a fast party cannot lap a slow one into the next generation.
* RESETTING - ``reset()`` was called while parties were waiting; they leave with
              ``BrokenBarrierError`` and the last to leave flips back to FILLING.
* BROKEN    - a wait timed out, the action raised, a waiting party was interrupted, or
              ``abort()`` was called; every current and future ``wait`` raises
              ``BrokenBarrierError`` until ``reset()``.

One ``Condition(Lock())`` guards everything; the DRAINING state keeps one round's parties apart
from the next (the generation counter only counts completed rounds, for ``repr``).  Every wait
has a deadline (``timeout``) that covers the whole call, waiting for a drain included, and a
timeout breaks the barrier for all.

Two departures from CPython, both so that a run fails fast instead of waiting out its timeout:
an exception that interrupts a waiting party (Ctrl-C in the main thread) breaks the barrier for
the others, as in Java's ``CyclicBarrier``; and the deadline also bounds the wait for a drain.

The state machine is written once (``_Barrier``) over three primitives -- hold the lock, wait
until a predicate holds or a deadline passes, wake the waiters -- so that the two variants at the
end of this module, ``RLockBarrier`` and ``LockPollingBarrier``, differ from ``ConditionBarrier``
only in those.  They are for the benchmarks alone (the report's Lock / RLock / Condition question;
see the comment above them); the library uses ``ConditionBarrier``.
"""
from __future__ import annotations

import threading
from enum import IntEnum
from threading import BrokenBarrierError
from time import monotonic, sleep
from typing import Callable

__all__ = ["BrokenBarrierError", "ConditionBarrier", "LockPollingBarrier", "RLockBarrier", "State"]


class State(IntEnum):
    FILLING = 0
    DRAINING = 1
    RESETTING = -1
    BROKEN = -2


class _Barrier:
    """CPython's barrier state machine; subclasses say how to lock, wait and wake."""

    def __init__(self, parties: int, action: Callable[[], None] | None = None,
                 timeout: float | None = None):
        if parties < 1:
            raise ValueError(f"parties must be >= 1. Got {parties} instead.")
        self._action = action
        self._timeout = timeout
        self._parties = parties
        self._state = State.FILLING
        self._count = 0
        self._generation = 0

    # -- the primitives: ``_guard`` is the lock (a context manager) held around every state change
    def _wait_until(self, predicate: Callable[[], bool], deadline: float | None) -> bool:
        """With ``_guard`` held: wait until ``predicate()`` holds (True) or ``deadline`` passes
        (False); ``_guard`` is held again on return, also when an exception interrupts the wait."""
        raise NotImplementedError

    def _notify_all(self) -> None:
        """With ``_guard`` held: wake every thread inside ``_wait_until``."""
        raise NotImplementedError

    # -- the state machine (CPython's, names and all)
    def wait(self, timeout: float | None = None) -> int:
        """Wait until ``parties`` threads have called ``wait``; the last of them runs ``action``
        before any is released.

        Returns the arrival index, 0 .. parties-1 in order of arrival (the last arrival, which ran
        the action, gets ``parties - 1``), as CPython does.  Raises ``BrokenBarrierError`` if the
        barrier is or becomes broken, or ``timeout`` (default: the barrier's) passes first --
        which breaks it for every party.  If ``action`` raises, the barrier breaks and the
        exception propagates from the ``wait`` of the party that ran it.
        """
        if timeout is None:
            timeout = self._timeout
        deadline = None if timeout is None else monotonic() + timeout
        with self._guard:
            self._enter(deadline)
            index = self._count
            self._count += 1
            try:
                if index + 1 == self._parties:
                    self._release()
                else:
                    self._wait(deadline)
                return index
            finally:
                self._count -= 1
                self._exit()

    def _enter(self, deadline: float | None) -> None:
        # wait for the previous generation to drain (or a reset to finish) before joining
        if not self._wait_until(lambda: self._state not in (State.DRAINING, State.RESETTING), deadline):
            self._break()
            raise BrokenBarrierError
        if self._state is State.BROKEN:
            raise BrokenBarrierError
        assert self._state is State.FILLING

    def _release(self) -> None:
        # the last arrival: run the action, then wake the generation
        try:
            if self._action is not None:
                self._action()
            self._state = State.DRAINING
            self._generation += 1
            self._notify_all()
        except BaseException:
            self._break()
            raise

    def _wait(self, deadline: float | None) -> None:
        try:
            released = self._wait_until(lambda: self._state is not State.FILLING, deadline)
        except BaseException:
            # interrupted (KeyboardInterrupt): the round can no longer complete, so say so now
            self._break()
            raise
        if not released:
            self._break()
            raise BrokenBarrierError
        if self._state is State.BROKEN or self._state is State.RESETTING:
            raise BrokenBarrierError
        assert self._state is State.DRAINING

    def _exit(self) -> None:
        # the last party to leave re-opens the barrier for the next generation
        if self._count == 0 and self._state in (State.DRAINING, State.RESETTING):
            self._state = State.FILLING
            self._notify_all()

    def reset(self) -> None:
        """Return to FILLING; parties waiting now get ``BrokenBarrierError``."""
        with self._guard:
            if self._count > 0:
                if self._state in (State.FILLING, State.BROKEN):
                    self._state = State.RESETTING
            else:
                self._state = State.FILLING
            self._notify_all()

    def abort(self) -> None:
        """Break the barrier: every current and future ``wait`` raises until ``reset()``."""
        with self._guard:
            self._break()

    def _break(self) -> None:
        self._state = State.BROKEN
        self._notify_all()

    @property
    def action(self) -> Callable[[], None] | None:
        return self._action

    @property
    def parties(self) -> int:
        return self._parties

    @property
    def n_waiting(self) -> int:
        """Parties waiting in the current generation (racy by nature, as in CPython)."""
        return self._count if self._state is State.FILLING else 0

    @property
    def broken(self) -> bool:
        return self._state is State.BROKEN

    @property
    def generation(self) -> int:
        """Rounds completed since construction."""
        return self._generation

    def __repr__(self) -> str:
        if self.broken:
            return f"<{type(self).__name__} broken, parties={self._parties}>"
        return (f"<{type(self).__name__} {self._state.name.lower()}, waiters={self.n_waiting}/"
                f"{self._parties}, generation={self._generation}>")


class ConditionBarrier(_Barrier):
    """A reusable barrier for ``parties`` threads whose last arrival runs ``action``: CPython's
    ``threading.Barrier`` over one ``Condition(Lock())`` (see the module docstring)."""

    _lock_type = staticmethod(threading.Lock)

    def __init__(self, parties: int, action: Callable[[], None] | None = None,
                 timeout: float | None = None):
        super().__init__(parties, action, timeout)
        self._cond = self._guard = threading.Condition(self._lock_type())

    def _wait_until(self, predicate, deadline):
        return self._cond.wait_for(predicate, None if deadline is None else deadline - monotonic())

    def _notify_all(self) -> None:
        self._cond.notify_all()


# -- Benchmark-only variants ---------------------------------------------------------------------
# The 2020 report tried a plain Lock, an RLock and a Condition for its barrier, hung, and could
# not tell which was at fault (original-report.md).  These two variants exist only so that the
# benchmarks can answer its question -- what one barrier round costs with each primitive -- with
# correct implementations: the same state machine as ConditionBarrier, deadlines and abort
# included.  The library itself uses ConditionBarrier only.

class RLockBarrier(ConditionBarrier):
    """``ConditionBarrier`` over ``Condition(RLock())``: the report's RLock, made correct."""

    _lock_type = staticmethod(threading.RLock)


class LockPollingBarrier(_Barrier):
    """The report's polling approach, made correct: one plain ``Lock`` and no condition; a waiting
    party releases the lock, yields (``sleep(0)``) and re-checks, until released or past its
    deadline.  It burns a core per waiter; it is here to be measured, not used."""

    def __init__(self, parties: int, action: Callable[[], None] | None = None,
                 timeout: float | None = None):
        super().__init__(parties, action, timeout)
        self._guard = threading.Lock()

    def _wait_until(self, predicate, deadline):
        while not predicate():
            if deadline is not None and monotonic() >= deadline:
                return False
            try:
                # release inside the try: an exception from here on (Ctrl-C) comes after the
                # release, and the finally re-takes the lock, as the caller expects
                self._guard.release()
                sleep(0)
            finally:
                self._guard.acquire()
        return True

    def _notify_all(self) -> None:
        """Nothing to wake: waiters poll."""
