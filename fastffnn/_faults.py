"""Test-only fault injection: the drivers consult the plan at fixed points, so tests can make an
instance raise, hang, die or go non-finite at a chosen epoch and place (RELIABILITY.md), or mark
on stdout that the run got there."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass

WHERE = ("kernel", "barrier", "reduction", "sync")
WHAT = ("raise", "hang", "stuck", "kill", "nan", "exit", "slow", "unpicklable", "mark")


class InjectedFault(RuntimeError):
    """The exception an injected "raise" fault throws; ``raised_at`` is its ``time.monotonic()``
    (system-wide, so comparable across processes): the benchmarks time how fast a run stops."""

    def __init__(self, instance: int, epoch: int, raised_at: float | None = None):
        super().__init__(f"injected fault in instance {instance} at epoch {epoch}")
        self.instance, self.epoch = instance, epoch
        self.raised_at = time.monotonic() if raised_at is None else raised_at

    def __reduce__(self):
        return type(self), (self.instance, self.epoch, self.raised_at)


class _Unpicklable(RuntimeError):
    """Raised by the "unpicklable" fault: holds a lock, so it cannot cross a process boundary."""

    def __init__(self, epoch: int):
        super().__init__(f"unpicklable failure at epoch {epoch}")
        self.epoch, self.lock = epoch, threading.Lock()


@dataclass(frozen=True)
class Fault:
    instance: int
    epoch: int
    where: str = "kernel"
    what: str = "raise"
    seconds: float = 0.05   # for "slow" and "stuck"


_PLAN: list = []


@contextlib.contextmanager
def inject(*faults: Fault):
    """Arm ``faults`` for the runs started inside the ``with`` block."""
    assert all(f.where in WHERE and f.what in WHAT for f in faults), faults
    _PLAN.extend(faults)
    try:
        yield
    finally:
        for fault in faults:        # only these: an enclosing ``inject`` keeps its own
            _PLAN.remove(fault)


def plan() -> tuple:
    """The armed faults, frozen at the start of a run (and shipped to worker processes)."""
    return tuple(_PLAN)


def trigger(fault: Fault, params_row, cancel: threading.Event) -> None:
    """Carry out ``fault`` in the calling worker."""
    what = fault.what
    if what == "raise":
        raise InjectedFault(fault.instance, fault.epoch)
    if what == "unpicklable":
        raise _Unpicklable(fault.epoch)
    if what == "nan":
        params_row[0] = float("nan")
    elif what == "hang":
        cancel.wait()          # a hang that ends only when the run is cancelled
    elif what == "slow":
        cancel.wait(fault.seconds)
    elif what == "stuck":
        time.sleep(fault.seconds)   # a hang the cancel flag cannot end (processes only: it is killed)
    elif what == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif what == "exit":
        os._exit(0)
    elif what == "mark":
        # tells a test watching stdout that this point of the run was reached (a worker process
        # shares its parent's stdout)
        print(f"MARK {fault.instance} {fault.epoch}", flush=True)
