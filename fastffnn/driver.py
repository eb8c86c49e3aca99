"""The driver: allocate once, loop over sync rounds, run the span kernels, meet at the barrier.

``worker_loop`` is the one training loop; every backend runs it, and only decides where it runs
(this thread, a pool of threads, worker processes), which instances each loop runs per round (a
fixed group, or slices of a ``SharedRound`` for threads) and which barrier joins the loops.  The
barrier's action -- the reduction and the sync strategy -- runs once per round
(``fastffnn.sync.SyncAction``), on whichever party arrives last (in the parent for processes).
"""
from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass
from threading import BrokenBarrierError
from time import perf_counter

import numpy as np

from . import kernels
from .kernels import numpy_span
from .kernels.config import N_HYPER

from ._faults import Fault, trigger
from .errors import InstanceFailed, SyncTimeout
from .network import Topology

KERNELS = {"numba": kernels.train_span, "numba-gil": kernels.train_span_gil,
           "numpy": numpy_span.train_span}


@dataclass(frozen=True)
class Plan:
    """A picklable description of one run; worker processes rebuild their context from it."""

    topology: Topology
    kernel: str
    rounds: tuple          # ((first epoch, end epoch) of each sync round, ...)
    groups: tuple          # instances run by each worker
    faults: tuple          # armed test-only faults (fastffnn._faults)
    timeout: float | None
    dtype: str
    n_samples: int
    n_features: int

    @property
    def instances(self) -> int:
        return sum(len(g) for g in self.groups)

    @property
    def epochs(self) -> int:
        return self.rounds[-1][1]

    def array_specs(self) -> dict:
        """Name -> (shape, dtype) of every array the workers share.  Threads share the objects;
        processes get them in shared memory, so the data is stored once whatever N is."""
        N, P, n = self.instances, self.topology.n_params, self.n_samples
        return {"X": ((n, self.n_features), self.dtype), "T": ((n, self.topology.sizes[-1]), self.dtype),
                "params": ((N, P), self.dtype), "velocity": ((N, P), self.dtype),
                "rng": ((N, 1), np.uint64), "order": ((N, n), np.int64),
                "losses": ((N, self.epochs), self.dtype), "hyper": ((N, N_HYPER), self.dtype),
                "compute": ((N,), np.float64), "waited": ((N,), np.float64),
                "progress": ((N,), np.int64),
                "position": ((len(self.groups), 2), np.int64)}

    def faults_at(self, instances, e0: int, e1: int, where: str) -> list:
        if not self.faults:
            return []
        return sorted((f for f in self.faults if f.instance in instances and e0 <= f.epoch < e1
                       and f.where == where), key=lambda f: f.epoch)

    def segments(self, instances, e0: int, e1: int):
        """(start, stop, fault or None): the span [e0, e1) cut at each injected kernel fault, which
        fires at ``stop``.  Without faults, one segment; cutting a span never changes results."""
        start = e0
        for fault in self.faults_at(instances, e0, e1, "kernel") + [None]:
            stop = e1 if fault is None else fault.epoch
            yield start, stop, fault
            start = stop


class Failure:
    """The first failure of a run (its root cause); later ones are consequences."""

    def __init__(self):
        self._lock = threading.Lock()
        self.exc: BaseException | None = None

    def record(self, exc: BaseException) -> None:
        with self._lock:
            if self.exc is None:
                self.exc = exc


CACHE_LINE = 64


def _cache_aligned(shape_lead: tuple, size: int, dtype) -> np.ndarray:
    """Zeros of shape ``shape_lead + (size rounded up to a cache line,)``, starting on a cache
    line: every row, and every buffer the kernels lay out inside it at multiples of the vector
    width, starts on one (split vector loads cost the kernels about 5 %).  The kernels use the
    first ``size`` elements of a row."""
    itemsize = np.dtype(dtype).itemsize
    row = -(-size * itemsize // CACHE_LINE) * CACHE_LINE // itemsize
    n = int(np.prod(shape_lead, dtype=np.int64)) * row
    raw = np.zeros(n * itemsize + CACHE_LINE, np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start:start + n * itemsize].view(dtype).reshape(shape_lead + (row,))


class Context:
    """What a worker loop needs: the plan, the shared arrays, the cancel flag, the failure slot."""

    def __init__(self, plan: Plan, arrays: dict, cancel=None, failure: Failure | None = None):
        self.plan, self.arrays = plan, arrays
        for name, array in arrays.items():
            setattr(self, name, array)
        self.cancel = threading.Event() if cancel is None else cancel
        self.failure = Failure() if failure is None else failure
        self.span = KERNELS[plan.kernel]
        self.sizes = plan.topology.sizes_array
        self.act = plan.topology.act_code

    def scratch(self, shape_lead: tuple = ()) -> tuple:
        """Per-instance scratch (work, grad), allocated once per worker, never inside a span."""
        plan = self.plan
        batch = int(min(self.plan.n_samples, max(1, self.hyper[:, kernels.config.BATCH_SIZE].max())))
        size = kernels.workspace_size(plan.topology.sizes, batch)
        return (_cache_aligned(shape_lead, size, plan.dtype),
                _cache_aligned(shape_lead, plan.topology.n_params, plan.dtype))

    def run_span(self, k: int, e0: int, e1: int, scratch: tuple) -> None:
        work, grad = scratch
        self.span(self.params[k], self.velocity[k], self.rng[k], self.losses[k, e0:e1], self.X, self.T,
                  self.sizes, self.act, self.hyper[k], work, grad, self.order[k])

    def at(self, worker: int, instance: int, epoch: int) -> None:
        """Note where a worker is (instance -1: between spans), to name it if its process dies."""
        self.position[worker] = instance, epoch

    def fire(self, fault: Fault, worker: int | None = None) -> None:
        """Carry out an injected fault (in ``worker``, whose position then names the instance if
        the fault kills its process); an exception it raises is the instance's failure."""
        if worker is not None:
            self.at(worker, fault.instance, fault.epoch)
        try:
            trigger(fault, self.params[fault.instance], self.cancel)
        except Exception as exc:
            raise InstanceFailed(fault.instance, fault.epoch, exc) from exc

    def raise_failure(self, failed_round: int | None) -> None:
        """Raise the run's root cause, or a SyncTimeout naming the instances that never arrived."""
        if self.failure.exc is not None:
            raise self.failure.exc
        if failed_round is not None:
            missing = [k for k in range(self.plan.instances) if self.progress[k] <= failed_round]
            raise SyncTimeout(self.plan.rounds[failed_round][1], missing, self.plan.timeout)


def run_spans(ctx: Context, worker: int, instances, e0: int, e1: int, scratch) -> bool:
    """Run the span [e0, e1) of each of ``instances`` in turn; returns whether all of them ran
    (False: the run was cancelled)."""
    for k in instances:
        t = perf_counter()
        try:
            for start, stop, fault in ctx.plan.segments((k,), e0, e1):
                if ctx.cancel.is_set():
                    return False
                ctx.at(worker, k, start)
                ctx.run_span(k, start, stop, scratch)
                if fault is not None:
                    ctx.fire(fault, worker)
        except InstanceFailed:
            raise
        except Exception as exc:
            raise InstanceFailed(k, getattr(exc, "epoch", e0), exc) from exc
        ctx.compute[k] += perf_counter() - t
    return True


def arrive(ctx: Context, worker: int, instances: list, r: int) -> list:
    """``instances`` have finished round r: carry out their injected barrier faults, then count
    them arrived (not "missing" in a SyncTimeout) unless the run was cancelled meanwhile.
    Returns ``instances``."""
    e0, e1 = ctx.plan.rounds[r]
    for fault in ctx.plan.faults_at(instances, e0, e1, "barrier"):
        ctx.fire(fault, worker)
    if not ctx.cancel.is_set():
        ctx.progress[instances] = r + 1
    return instances


def run_instances(ctx: Context, worker: int, group: list, r: int, scratch) -> list:
    """A worker's fixed share (serial and processes): round r of every instance of ``group``,
    which then arrive together; returns the instances that finished the round."""
    ran = run_spans(ctx, worker, group, *ctx.plan.rounds[r], scratch)
    return arrive(ctx, worker, group, r) if ran else []


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


def worker_loop(ctx: Context, worker: int, group: list, barrier, run_group=run_instances,
                scratch=None) -> None:
    """The training loop of one worker: for each sync round, run its instances' spans --
    ``run_group`` says which: a fixed ``group``, or slices of a ``SharedRound`` -- then meet the
    others at the barrier, whose action syncs them.  A failure is recorded as the run's root
    cause and breaks the barrier for everyone."""
    try:
        scratch = ctx.scratch() if scratch is None else scratch
        for r, (_, e1) in enumerate(ctx.plan.rounds):
            if ctx.cancel.is_set():
                return
            finished = run_group(ctx, worker, group, r, scratch)
            if ctx.cancel.is_set():
                return      # cancelled mid-round: this worker never arrived
            ctx.at(worker, -1, e1)
            t = perf_counter()
            barrier.wait()
            ctx.waited[finished] += perf_counter() - t
    except BrokenBarrierError:
        pass    # someone else failed or timed out; the root cause is theirs
    except BaseException as exc:
        ctx.failure.record(exc)
        barrier.abort()


def coordinate(ctx: Context, barrier) -> int | None:
    """The calling thread's side of every round: wait at the barrier (with the run's timeout).
    Returns the round that failed, or None when all rounds completed."""
    for r in range(len(ctx.plan.rounds)):
        try:
            barrier.wait()
        except BrokenBarrierError:
            return r        # a party failed (its failure is recorded) or the round timed out
        except Exception as exc:
            ctx.failure.record(exc)     # the action, run here, raised (already recorded) -- or anything else
            return r
    return None
