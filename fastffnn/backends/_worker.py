"""The worker process of the processes backend: started by ``processes.WorkerPool`` as
``python -c BOOTSTRAP``, never by re-running the user's main module, it serves runs until told
to exit or until its parent is gone.

For each run it maps the parent's shared-memory segments, loads the kernels (compiled once per
process and dtype, then kept), reports "ready", runs ``driver.worker_loop`` behind a
``PipeBarrier``, and reports how it ended: "done", "cancelled", or "failed" with the exception and
its traceback text.  Then it drops the mappings and waits for the next run.
"""
from __future__ import annotations

import contextlib
import gc
import os
import pickle
import threading
import traceback
from threading import BrokenBarrierError

import numpy as np

from ..driver import Context, worker_loop
from ..errors import InstanceFailed

# Run by ``python -c`` with the socket's and the parent-watch pipe's descriptors as arguments.
# Only the standard library runs before the connection is up, so that an import error in the
# package (a bad environment) still reaches the parent as a traceback; SIGINT is ignored at once,
# since Ctrl-C in a terminal reaches the whole process group and is the parent's to handle.
BOOTSTRAP = """\
import signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
sys.path[:] = conn.recv()
try:
    from fastffnn.backends._worker import serve
except BaseException:
    import traceback
    conn.send(("failed", None, traceback.format_exc()))
    raise SystemExit(1)
serve(conn, int(sys.argv[2]))
"""


class PipeBarrier:
    """The worker's side of the coordinator: arrive, then wait for the parent's verdict."""

    def __init__(self, conn, ctx: Context, worker: int):
        self.conn, self.ctx, self.worker = conn, ctx, worker
        self.round = 0

    def wait(self) -> None:
        """No deadline here: the parent's watchdog keeps it, and answers "abort" when a round fails."""
        ctx = self.ctx
        e0, e1 = ctx.plan.rounds[self.round]
        self.round += 1
        self.conn.send(("arrive",))
        for fault in ctx.plan.faults_at(ctx.plan.groups[self.worker], e0, e1, "sync"):
            ctx.fire(fault, self.worker)      # inside the sync section: arrived, verdict not yet received
        try:
            if self.conn.recv() == "go":
                return
        except (EOFError, OSError):
            pass            # the parent is gone
        raise BrokenBarrierError

    def abort(self) -> None:
        """The failure itself is sent to the parent when the worker loop returns."""


def portable(exc: BaseException) -> tuple:
    """("failed", exception, traceback text), the exception replaced by the text when it does not
    survive pickling (it holds a lock, or cannot be rebuilt from its args)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        exc = (InstanceFailed(exc.instance, exc.epoch, text) if isinstance(exc, InstanceFailed)
               else RuntimeError(text))
    return "failed", exc, text


def attach(segments: dict) -> dict:
    """The worker's views of the parent's segments: name -> (path, shape, dtype)."""
    from .processes import map_segment
    return {name: map_segment(path, shape, dtype, create=False) for name, (path, shape, dtype) in segments.items()}


def run_one(conn, plan, segments: dict, worker: int) -> str:
    """One run's share of this worker; every way it ends is reported to the parent, and returned
    ("done", "cancelled" or "failed")."""
    group = list(plan.groups[worker])
    try:
        ctx = Context(plan, attach(segments))
        scratch = ctx.scratch()
        ctx.run_span(group[0], 0, 0, scratch)   # load the kernel before the first round's clock
    except Exception as exc:
        end = portable(InstanceFailed(group[0], 0, exc))
    else:
        conn.send(("ready",))
        worker_loop(ctx, worker, group, PipeBarrier(conn, ctx, worker), scratch=scratch)
        failure = ctx.failure.exc
        end = portable(failure) if failure is not None else ("cancelled",) if ctx.cancel.is_set() else ("done",)
    with contextlib.suppress(OSError):
        conn.send(end)
    return end[0]


def _exit_with_parent(fd: int) -> None:
    """End this worker when the parent dies, even while a kernel or a hang holds its main thread:
    the parent holds the write end of the pipe ``fd`` and never writes, so a read returns only
    when every copy of that end is closed."""
    threading.Thread(target=lambda: (os.read(fd, 1), os._exit(1)), name="fastffnn-parent-watch",
                     daemon=True).start()


def serve(conn, parent_fd: int) -> None:
    """The worker's life: say "ready", then serve ("run", plan, segments, worker) messages -- and
    ("ping",), answered "ready" -- until ("exit",) or the parent closes the connection."""
    from threadpoolctl import threadpool_limits
    _exit_with_parent(parent_fd)
    threadpool_limits(1)        # this process runs one instance at a time on one core
    np.zeros(1)                 # numpy fully loaded before the parent counts this worker started
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "ping":
            conn.send(("ready", os.getpid()))
            continue
        if msg[0] != "run":
            return
        if run_one(conn, *msg[1:]) == "failed":
            gc.collect()        # the failure's traceback (a cycle) still holds this run's mappings
