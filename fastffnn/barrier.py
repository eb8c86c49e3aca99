"""The thread barrier: CPython's ``threading.Barrier`` with the sync reduction as its action.

States (as in CPython ``Lib/threading.py``):

* FILLING   - parties are arriving; the last one to arrive runs ``action`` and flips to DRAINING.
* DRAINING  - the parties of this generation are leaving ``wait``; the last to leave flips back
              to FILLING, so a fast party cannot lap a slow one into the next generation.
* RESETTING - ``reset()`` was called while parties were waiting; they leave with
              ``BrokenBarrierError`` and the last to leave flips back to FILLING.
* BROKEN    - a wait timed out, the action raised, or ``abort()`` was called; every current and
              future ``wait`` raises ``BrokenBarrierError`` until ``reset()``.

One ``Condition(Lock())`` guards everything; a generation counter tells the parties of one round
from the next.  Every wait has a deadline (``timeout``), and a timeout breaks the barrier for all.
"""
from __future__ import annotations

import threading
from enum import IntEnum
from threading import BrokenBarrierError
from typing import Callable

__all__ = ["BrokenBarrierError", "ConditionBarrier", "State"]


class State(IntEnum):
    FILLING = 0
    DRAINING = 1
    RESETTING = -1
    BROKEN = -2


class ConditionBarrier:
    """A reusable barrier for ``parties`` threads whose last arrival runs ``action``.

    ``wait(timeout)`` returns the arrival index (0 .. parties-1, the last arrival gets 0 as in
    CPython: ``parties - 1 - index``).  If ``action`` raises, the barrier breaks and the exception
    propagates from the ``wait`` of the party that ran it; the others get ``BrokenBarrierError``.
    """

    def __init__(self, parties: int, action: Callable[[], None] | None = None,
                 timeout: float | None = None):
        if parties < 1:
            raise ValueError(f"parties must be >= 1. Got {parties} instead.")
        self._cond = threading.Condition(threading.Lock())
        self._action = action
        self._timeout = timeout
        self._parties = parties
        self._state = State.FILLING
        self._count = 0
        self._generation = 0

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            timeout = self._timeout
        with self._cond:
            self._enter()
            index = self._count
            self._count += 1
            try:
                if index + 1 == self._parties:
                    self._release()
                else:
                    self._wait(timeout)
                return index
            finally:
                self._count -= 1
                self._exit()

    def _enter(self) -> None:
        # wait for the previous generation to drain (or a reset to finish) before joining
        while self._state in (State.DRAINING, State.RESETTING):
            self._cond.wait()
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
            self._cond.notify_all()
        except BaseException:
            self._break()
            raise

    def _wait(self, timeout: float | None) -> None:
        generation = self._generation
        if not self._cond.wait_for(lambda: self._state is not State.FILLING
                                   or self._generation != generation, timeout):
            self._break()
            raise BrokenBarrierError
        if self._state is State.BROKEN or self._state is State.RESETTING:
            raise BrokenBarrierError
        assert self._state is State.DRAINING

    def _exit(self) -> None:
        # the last party to leave re-opens the barrier for the next generation
        if self._count == 0 and self._state in (State.DRAINING, State.RESETTING):
            self._state = State.FILLING
            self._cond.notify_all()

    def reset(self) -> None:
        """Return to FILLING; parties waiting now get ``BrokenBarrierError``."""
        with self._cond:
            if self._count > 0:
                if self._state is State.FILLING:
                    self._state = State.RESETTING
                elif self._state is State.BROKEN:
                    self._state = State.RESETTING
            else:
                self._state = State.FILLING
            self._cond.notify_all()

    def abort(self) -> None:
        """Break the barrier: every current and future ``wait`` raises until ``reset()``."""
        with self._cond:
            self._break()

    def _break(self) -> None:
        self._state = State.BROKEN
        self._cond.notify_all()

    @property
    def parties(self) -> int:
        return self._parties

    @property
    def n_waiting(self) -> int:
        return self._count if self._state is State.FILLING else 0

    @property
    def broken(self) -> bool:
        return self._state is State.BROKEN

    @property
    def generation(self) -> int:
        return self._generation

    def __repr__(self) -> str:
        if self.broken:
            return f"<{type(self).__name__} broken, parties={self._parties}>"
        return (f"<{type(self).__name__} {self._state.name.lower()}, waiters={self.n_waiting}/"
                f"{self._parties}, generation={self._generation}>")
