"""What every backend is: it allocates the run's shared arrays, warms the kernels, and runs every
round of ``driver.worker_loop`` somewhere.  The loop itself, the barrier action, the watchdog and
the failure handling belong to ``driver`` and ``sync``; nothing here or in a backend repeats them.
"""
from __future__ import annotations

import contextlib
import os
import threading
from time import perf_counter

import numpy as np

from .. import kernels
from ..barrier import ConditionBarrier
from ..driver import Context, Watchdog, run_instances, worker_loop
from ..sync import combine


def warm_predict(ctx: Context, action) -> None:
    """Compile what the sync action calls: the reduction, and prediction if the action predicts
    (``SyncAction.predicts``).  A run that does not predict leaves prediction to compile on first
    use, after the run, rather than make every first run wait for it."""
    if action.predicts:
        proba = np.empty((1, ctx.T.shape[1]), dtype=ctx.params.dtype)
        kernels.predict_proba(proba, ctx.X[:1], ctx.params[0], ctx.sizes, ctx.act,
                              ctx.hyper[0, kernels.config.PENALTY], ctx.binary)
    combine(ctx.params[:, :1], np.ones(ctx.plan.instances))


def cpu_count() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Backend:
    """Runs every round of a run; raises the run's root cause on failure."""

    name = "base"
    parallel = False      # whether workers run at the same time (BLAS is then pinned to 1 thread)

    @property
    def info(self) -> dict:
        """What the run's result records of where it ran (``TrainResult.config``)."""
        return {}

    def default_workers(self, instances: int) -> int:
        """Workers when ``train`` is given none: the cores, at most ``instances``."""
        return min(instances, cpu_count())

    @contextlib.contextmanager
    def allocate(self, specs: dict):
        """Yield the run's shared arrays (name -> zeroed array)."""
        yield {name: np.zeros(shape, dtype) for name, (shape, dtype) in specs.items()}

    def warm(self, ctx: Context, action) -> None:
        """Compile the kernels in this thread before any worker starts (a zero-epoch span, and
        what the sync action calls)."""
        ctx.run_span(0, 0, 0, ctx.scratch())
        warm_predict(ctx, action)

    def run(self, ctx: Context, action) -> float:
        """Warm the kernels, then run every round; returns the wall seconds, compilation excluded."""
        self.warm(ctx, action)
        ctx.compute[...] = 0.0      # compiling is not computing
        t = perf_counter()
        self.execute(ctx, action)
        return perf_counter() - t

    def execute(self, ctx: Context, action) -> None:
        raise NotImplementedError


def run_in_threads(ctx: Context, action, groups, run_group=run_instances, scratch=None) -> None:
    """One worker thread per group, meeting at a ``ConditionBarrier`` whose last arrival runs the
    action.  The calling thread waits for them and is the watchdog meanwhile (``Watchdog.join``),
    so it takes Ctrl-C while the workers compute and breaks the barrier when the run stalls.
    However it ends, the cancel flag stops every worker within a step before this returns."""
    barrier = ConditionBarrier(len(groups), action)

    def work(w: int, group: list) -> None:
        worker_loop(ctx, w, group, barrier, run_group, scratch)
        if ctx.failure.exc is not None:
            ctx.cancel.set()        # the others stop within a step, and the calling thread's wait ends

    threads = [threading.Thread(target=work, args=(w, list(g)), name=f"fastffnn-worker-{w}", daemon=True)
               for w, g in enumerate(groups)]
    try:
        for t in threads:
            t.start()
        Watchdog(ctx, barrier.abort).join(threads)
    finally:
        ctx.cancel.set()
        barrier.abort()
        for t in threads:
            if t.ident is not None:     # started
                t.join()
    ctx.raise_failure()
