"""Backends: where the worker loops run and which barrier joins them.  The loop itself, the
barrier action and the failure handling belong to ``driver`` and ``sync``; nothing here repeats them.
"""
from __future__ import annotations

import contextlib
import threading
from time import perf_counter

import numba
import numpy as np

from . import kernels

from .barrier import ConditionBarrier
from .driver import Context, SharedRound, arrive, coordinate, run_instances, worker_loop
from .sync import combine

# Numba's threading layers that may be entered from several Python threads at once.
THREADSAFE_LAYERS = ("tbb", "omp")


def warm_predict(ctx: Context) -> None:
    """Compile what the sync action calls: prediction and the reduction."""
    proba = np.empty((1, ctx.T.shape[1]), dtype=ctx.params.dtype)
    kernels.predict_proba(proba, ctx.X[:1], ctx.params[0], ctx.sizes, ctx.act,
                          ctx.hyper[0, kernels.config.PENALTY])
    combine(ctx.params[:, :1], np.ones(ctx.plan.instances))


class Backend:
    """Runs every round of a run; raises the run's root cause on failure."""

    name = "base"
    parallel = False      # whether workers run at the same time (BLAS is then pinned to 1 thread)

    @contextlib.contextmanager
    def allocate(self, specs: dict):
        """Yield the run's shared arrays (name -> zeroed array)."""
        yield {name: np.zeros(shape, dtype) for name, (shape, dtype) in specs.items()}

    def warm(self, ctx: Context) -> None:
        """Compile the kernels in this thread before any worker starts (a zero-epoch span, and a
        prediction for the sync action)."""
        ctx.run_span(0, 0, 0, ctx.scratch())
        warm_predict(ctx)

    def run(self, ctx: Context, action) -> float:
        """Warm the kernels, then run every round; returns the wall seconds, compilation excluded."""
        self.warm(ctx)
        ctx.compute[...] = 0.0      # compiling is not computing
        t = perf_counter()
        self.execute(ctx, action)
        return perf_counter() - t

    def execute(self, ctx: Context, action) -> None:
        raise NotImplementedError


class SerialBackend(Backend):
    """Every instance in turn in the calling thread; a one-party barrier runs the action."""

    name = "serial"

    def execute(self, ctx: Context, action) -> None:
        worker_loop(ctx, 0, list(range(ctx.plan.instances)), ConditionBarrier(1, action))
        ctx.raise_failure(None)


def run_in_threads(ctx: Context, action, groups, run_group=run_instances, scratch=None) -> None:
    """One worker thread per group; the calling thread is one more party of the
    ``ConditionBarrier``, so it times rounds out and takes Ctrl-C while the workers compute."""
    barrier = ConditionBarrier(len(groups) + 1, action, timeout=ctx.plan.timeout)
    threads = [threading.Thread(target=worker_loop, args=(ctx, w, list(g), barrier, run_group, scratch),
                                name=f"fastffnn-worker-{w}", daemon=True)
               for w, g in enumerate(groups)]
    try:
        for t in threads:
            t.start()
        failed = coordinate(ctx, barrier)
    finally:
        ctx.cancel.set()
        barrier.abort()
        for t in threads:
            if t.ident is not None:     # started
                t.join()
    ctx.raise_failure(failed)


class ThreadsBackend(Backend):
    """A pool of threads running the nogil span kernels on a shared round of instances."""

    name = "threads"
    parallel = True

    def execute(self, ctx: Context, action) -> None:
        # the workers share each round's instances (SharedRound) rather than keep fixed groups;
        # the barrier action lines up the next round while they all wait
        shared = SharedRound(ctx, len(ctx.plan.groups))

        def sync_then_advance():
            action()
            shared.advance()

        run_in_threads(ctx, sync_then_advance, ctx.plan.groups, shared.run)


_PRANGE_LOCK = threading.Lock()


def prange_spans(ctx: Context, worker: int, group: list, e0: int, e1: int, scratch) -> bool:
    """All instances' spans [e0, e1) in one ``parallel=True`` call; injected faults split the call
    at their epoch (every instance stops there), which leaves the results unchanged.  Returns
    False if the run was cancelled."""
    work, grad = scratch
    numba.set_num_threads(min(len(ctx.plan.groups), numba.config.NUMBA_NUM_THREADS))   # `workers`
    for start, stop, fault in ctx.plan.segments(group, e0, e1):
        if ctx.cancel.is_set():
            return False
        t = perf_counter()
        kernels.train_spans_parallel(ctx.params, ctx.velocity, ctx.rng, ctx.losses, start, stop, ctx.X,
                                     ctx.T, ctx.sizes, ctx.act, ctx.hyper, work, grad, ctx.order)
        ctx.compute[group] += perf_counter() - t    # every instance ran for the whole call
        if fault is not None:
            ctx.fire(fault, worker)
    return True


def run_prange(ctx: Context, worker: int, group: list, r: int, scratch) -> list:
    """Round r of every instance in one call (``prange_spans``); they then arrive together."""
    ran = prange_spans(ctx, worker, group, *ctx.plan.rounds[r], scratch)
    return arrive(ctx, worker, group, r) if ran else []


class PrangeBackend(Backend):
    """One compiled ``parallel=True`` call over all instances per round, made by one worker
    thread while the calling thread keeps the deadline and takes Ctrl-C.  It is the only caller
    of parallel kernels, and refuses to enter them from a second thread at once when Numba's
    threading layer is not thread-safe (workqueue aborts the process)."""

    name = "prange"
    parallel = True

    def run(self, ctx: Context, action) -> float:
        # compiling and running both enter the parallel runtime, so both happen under the lock
        if not _PRANGE_LOCK.acquire(blocking=False):
            try:
                layer = numba.threading_layer()
            except ValueError:      # not initialised yet: only an explicit choice is known
                layer = numba.config.THREADING_LAYER
            if layer not in THREADSAFE_LAYERS:
                raise RuntimeError(
                    f"backend='prange' is already running in another thread, and Numba's "
                    f"{layer!r} threading layer cannot be entered from several threads at once "
                    f"(it would abort the process). Use backend='threads', run prange from one "
                    f"thread at a time, or set NUMBA_THREADING_LAYER to one of {THREADSAFE_LAYERS}.")
            if not _PRANGE_LOCK.acquire(timeout=-1 if ctx.plan.timeout is None else ctx.plan.timeout):
                raise RuntimeError(f"backend='prange' waited {ctx.plan.timeout} s for another prange run "
                                   f"in this process to finish; raise `timeout` or use backend='threads'.")
        try:
            return super().run(ctx, action)
        finally:
            _PRANGE_LOCK.release()

    def warm(self, ctx: Context) -> None:
        prange_spans(ctx, 0, list(range(ctx.plan.instances)), 0, 0, ctx.scratch((ctx.plan.instances,)))
        warm_predict(ctx)

    def execute(self, ctx: Context, action) -> None:
        N = ctx.plan.instances
        run_in_threads(ctx, action, [range(N)], run_prange, ctx.scratch((N,)))


def get_backend(name: str) -> Backend:
    from .processes import ProcessesBackend
    return {"serial": SerialBackend, "threads": ThreadsBackend, "prange": PrangeBackend,
            "processes": ProcessesBackend}[name]()
