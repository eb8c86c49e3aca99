"""The threads backend: a pool of threads sharing each round's instances (``SharedRound``)."""
from __future__ import annotations

import heapq
import threading

from ..driver import Context, arrive, run_spans
from .base import Backend, run_in_threads


class SharedRound:
    """A round's instances shared by a pool of worker threads (``run`` is their ``run_group``):
    a worker takes the waiting instance with the most epochs left for a slice of them, then puts
    it back, so a faster core runs more slices and no worker waits at the barrier for a slower
    one's fixed share.  Slices are guided -- the instance-epochs left in the round over twice the
    workers -- so they shrink towards the end, while taking the furthest-behind instance first
    keeps the instances in step: with more instances than workers, the round ends with every
    worker busy until about one epoch before the barrier, after few slices (each is a lock and a
    kernel call).  With no more instances than workers there is nothing to balance, and each
    instance's round is one slice.  An instance is held by one worker at a time and its slices run
    in epoch order, and cutting a span never changes its results, so the run is bit-identical to
    the serial one whichever worker runs which slice.  An instance arrives as soon as its round is
    done, so a SyncTimeout names the instances that had not finished when the run was cancelled.

    ``open(r)`` lines up round r's instances; the barrier action calls ``advance()`` for the
    next round while every worker waits."""

    def __init__(self, ctx: Context, workers: int):
        self.ctx, self.workers = ctx, workers
        self._whole = ctx.plan.instances <= workers     # one slice per instance and round
        self._lock = threading.Lock()
        self.round = 0
        self.open(0)

    def open(self, r: int) -> None:
        e0, e1 = self.ctx.plan.rounds[r]
        N = self.ctx.plan.instances
        self.round = r
        self._waiting = [(e0, k) for k in range(N)]     # a heap of (next epoch, instance)
        self._left = (e1 - e0) * N                      # instance-epochs not yet handed out

    def advance(self) -> None:
        if self.round + 1 < len(self.ctx.plan.rounds):
            self.open(self.round + 1)

    def run(self, ctx: Context, worker: int, group, r: int, scratch) -> list:
        """Take slices of round r until none is left; returns the instances whose round this
        worker finished (``group``, a fixed share, is not used)."""
        e1 = ctx.plan.rounds[r][1]
        finished = []
        while True:
            with self._lock:
                if not self._waiting:
                    return finished
                start, k = heapq.heappop(self._waiting)
                stop = e1 if self._whole else min(e1, start + max(1, self._left // (2 * self.workers)))
                self._left -= stop - start
            if not run_spans(ctx, worker, [k], start, stop, scratch):
                return finished         # cancelled
            if stop < e1:
                with self._lock:
                    heapq.heappush(self._waiting, (stop, k))
            else:
                finished += arrive(ctx, worker, [k], r)


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
