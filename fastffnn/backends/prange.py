"""The prange backend: one compiled ``parallel=True`` call over all instances per round."""
from __future__ import annotations

import threading
from time import perf_counter

import numba

from .. import kernels
from ..driver import Context, arrive
from .base import Backend, run_in_threads, warm_predict

# Numba's threading layers that may be entered from several Python threads at once.
THREADSAFE_LAYERS = ("tbb", "omp")

_PRANGE_LOCK = threading.Lock()


def prange_spans(ctx: Context, worker: int, group: list, e0: int, e1: int, scratch) -> bool:
    """All instances' spans [e0, e1) in one ``parallel=True`` call; injected faults split the call
    at their epoch (every instance stops there), which leaves the results unchanged.  Returns
    False if the run was cancelled (the kernels stop within a step when it is)."""
    work, grad = scratch
    numba.set_num_threads(min(len(ctx.plan.groups), numba.config.NUMBA_NUM_THREADS))   # `workers`
    for start, stop, fault in ctx.plan.segments(group, e0, e1):
        if ctx.cancel.is_set():
            return False
        t = perf_counter()
        kernels.train_spans_parallel(ctx.params, ctx.moments, ctx.steps, ctx.rng, ctx.losses, start, stop,
                                     ctx.X, ctx.T, ctx.sizes, ctx.act, ctx.hyper, work, grad, ctx.order,
                                     ctx.cancel.array, ctx.epochs_done, ctx.binary)
        ctx.compute[group] += perf_counter() - t    # every instance ran for the whole call
        if ctx.cancel.is_set():
            return False
        if fault is not None:
            ctx.fire(fault, worker)
    return True


def run_prange(ctx: Context, worker: int, group: list, r: int, scratch) -> list:
    """Round r of every instance in one call (``prange_spans``); they then arrive together."""
    ran = prange_spans(ctx, worker, group, *ctx.plan.rounds[r], scratch)
    return arrive(ctx, worker, group, r) if ran else []


class PrangeBackend(Backend):
    """One compiled ``parallel=True`` call over all instances per round, made by one worker
    thread while the calling thread takes Ctrl-C.  It is the only caller of parallel kernels, and
    refuses to enter them from a second thread at once when Numba's threading layer is not
    thread-safe (workqueue aborts the process)."""

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
            _PRANGE_LOCK.acquire()
        try:
            return super().run(ctx, action)
        finally:
            _PRANGE_LOCK.release()

    def warm(self, ctx: Context, action) -> None:
        prange_spans(ctx, 0, list(range(ctx.plan.instances)), 0, 0, ctx.scratch((ctx.plan.instances,)))
        warm_predict(ctx, action)

    def execute(self, ctx: Context, action) -> None:
        N = ctx.plan.instances
        run_in_threads(ctx, action, [range(N)], run_prange, ctx.scratch((N,)))
