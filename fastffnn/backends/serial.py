"""The serial backend: every instance in turn, in one worker thread."""
from __future__ import annotations

from ..driver import Context
from .base import Backend, run_in_threads


class SerialBackend(Backend):
    """Every instance in turn, in one worker thread; the calling thread only waits for it (and
    watches for a stall), so Ctrl-C and the watchdog stop a serial run within a step as they stop
    the others (a nogil kernel in the calling thread would not see Ctrl-C until its span ended)."""

    name = "serial"

    def execute(self, ctx: Context, action) -> None:
        run_in_threads(ctx, action, [range(ctx.plan.instances)])
