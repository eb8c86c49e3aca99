"""The driver: allocate once, loop over sync rounds, run the span kernels, meet at the barrier.

``run`` is the middle layer between ``fastffnn.train`` / ``fastffnn.resume`` (which validate and
build the ``Plan`` and the ``Start``) and a backend: it allocates the run's shared arrays, fills
them from the start -- a fresh run is a resumed one at epoch 0 -- runs the backend under the stall
watchdog and builds the ``TrainResult``.  Rounds end at sync points and at snapshot epochs; only
the former run the sync strategy.  ``worker_loop`` is the one training loop; every backend
runs it, and only decides where it runs (a worker thread, a pool of threads, worker processes),
which instances each loop runs per round (a fixed group, or slices of a ``SharedRound`` for
threads) and which barrier joins the loops.  The barrier's action -- the reduction and the sync
strategy -- runs once per round (``fastffnn.sync.SyncAction``), on whichever party arrives last (in
the parent for processes).

Stopping: the run's cancel flag is a (1,) array that the span kernels read before every step (and
every chunk of a full batch), so Ctrl-C, a failure or a stall stops every worker within a step.
The kernels count each instance's completed epochs (``epochs_done``); the ``Watchdog`` fails a run
in which no epoch has completed anywhere for ``timeout`` seconds.
"""
from __future__ import annotations

import functools
import threading
from contextlib import nullcontext
from dataclasses import dataclass, replace
from threading import BrokenBarrierError
from time import monotonic, perf_counter, sleep

import numpy as np
from threadpoolctl import ThreadpoolController

from . import kernels
from .kernels import numpy_span
from .kernels.config import N_HYPER

from ._faults import Fault, trigger
from .errors import InstanceFailed, SyncTimeout
from .network import Ensemble, Topology
from .results import History, Timing, TrainResult, TrainState


def _per_epoch(span):
    """A span that holds the GIL, called one epoch at a time: Python runs between the calls, so
    Ctrl-C, the watchdog and the other threads get the interpreter at least once an epoch (within
    an epoch nothing else can run, which is what this kernel is there to show)."""
    @functools.wraps(span)
    def run(params, moments, steps, rng, losses, *rest):
        # a zero-epoch span (the warm-up) still calls the kernel once: that compiles it
        for e in range(max(1, losses.shape[0])):
            span(params, moments, steps, rng, losses[e:e + 1], *rest)
    return run


KERNELS = {"numba": kernels.train_span, "numba-gil": _per_epoch(kernels.train_span_gil),
           "numpy": numpy_span.train_span}


@dataclass(frozen=True)
class Plan:
    """A picklable description of one run; worker processes rebuild their context from it."""

    topology: Topology
    kernel: str
    rounds: tuple          # ((first epoch, end epoch) of each round, ...): cut at sync points and snapshots
    groups: tuple          # instances run by each worker
    faults: tuple          # armed test-only faults (fastffnn._faults)
    timeout: float | None
    dtype: str
    n_samples: int
    n_features: int
    snapshots: frozenset = frozenset()      # epochs at which every instance's parameters are recorded
    # round ends that are not sync points: the run meets at a barrier there only to take a
    # snapshot (cutting a span never changes results), and the sync action does nothing else
    snapshot_only: frozenset = frozenset()

    @property
    def instances(self) -> int:
        return sum(len(g) for g in self.groups)

    @property
    def start(self) -> int:
        """The epoch the run starts from: 0, or where a resumed run left off."""
        return self.rounds[0][0]

    @property
    def epochs(self) -> int:
        return self.rounds[-1][1]

    def is_sync(self, r: int) -> bool:
        """Whether round r ends at a sync point."""
        return self.rounds[r][1] not in self.snapshot_only

    def array_specs(self) -> dict:
        """Name -> (shape, dtype) of every array the workers share.  Threads share the objects;
        processes get them in shared memory, so the data is stored once whatever N is.  The optimizer's
        state is ``moments`` and ``steps`` (``kernels.span``; ``TrainState``), whatever the optimizer."""
        N, P, n = self.instances, self.topology.n_params, self.n_samples
        return {"X": ((n, self.n_features), self.dtype), "T": ((n, self.topology.sizes[-1]), self.dtype),
                "params": ((N, P), self.dtype), "moments": ((N, 2, P), self.dtype), "steps": ((N,), np.int64),
                "rng": ((N, 1), np.uint64), "order": ((N, n), np.int64),
                "losses": ((N, self.epochs), self.dtype), "hyper": ((N, N_HYPER), self.dtype),
                "compute": ((N,), np.float64), "waited": ((N,), np.float64),
                "arrived": ((N,), np.int64), "epochs_done": ((N,), np.int64), "cancel": ((1,), np.int64),
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


class CancelFlag:
    """The run's cancel flag over its shared (1,) int64 array, which the span kernels read at every
    step -- in shared memory for processes, so the parent's ``set`` reaches their kernels."""

    POLL = 0.005        # seconds between looks in ``wait`` (used by injected hangs and delays)

    def __init__(self, array: np.ndarray):
        self.array = array

    def set(self) -> None:
        self.array[0] = 1

    def is_set(self) -> bool:
        return bool(self.array[0])

    def wait(self, timeout: float | None = None) -> bool:
        """Return once the flag is set (True) or ``timeout`` has passed (False)."""
        deadline = None if timeout is None else monotonic() + timeout
        while not self.is_set():
            if deadline is not None and monotonic() >= deadline:
                return False
            sleep(self.POLL)
        return True


class Context:
    """What a worker loop needs: the plan, the shared arrays, the cancel flag, the failure slot."""

    def __init__(self, plan: Plan, arrays: dict, failure: Failure | None = None):
        self.plan, self.arrays = plan, arrays
        for name, array in arrays.items():
            setattr(self, name, array)
        self.cancel = CancelFlag(arrays["cancel"])
        self.failure = Failure() if failure is None else failure
        self.synced = 0         # rounds whose sync action has completed (kept by the action)
        self.span = KERNELS[plan.kernel]
        self.sizes = plan.topology.sizes_array
        self.act, self.binary = plan.topology.act_code, plan.topology.binary

    def scratch(self, shape_lead: tuple = ()) -> tuple:
        """Per-instance scratch (work, grad), allocated once per worker, never inside a span."""
        plan = self.plan
        batch = int(min(self.plan.n_samples, max(1, self.hyper[:, kernels.config.BATCH_SIZE].max())))
        size = kernels.workspace_size(plan.topology.sizes, batch, plan.dtype)
        return (_cache_aligned(shape_lead, size, plan.dtype),
                _cache_aligned(shape_lead, plan.topology.n_params, plan.dtype))

    def run_span(self, k: int, e0: int, e1: int, scratch: tuple) -> None:
        work, grad = scratch
        self.span(self.params[k], self.moments[k], self.steps[k:k + 1], self.rng[k], self.losses[k, e0:e1],
                  self.X, self.T, self.sizes, self.act, self.hyper[k], work, grad, self.order[k], self.cancel.array,
                  self.epochs_done[k:k + 1], self.binary)

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

    def raise_failure(self) -> None:
        """Raise the run's root cause, if it failed."""
        if self.failure.exc is not None:
            raise self.failure.exc

    def stalled(self) -> SyncTimeout:
        """The SyncTimeout of a run that stopped progressing: the round the slowest instance is
        in, the instances that had not arrived at its barrier and the epoch each had reached."""
        r = min(self.synced, len(self.plan.rounds) - 1)      # the round whose sync is pending
        behind = {k: int(self.epochs_done[k]) for k in range(self.plan.instances) if self.arrived[k] <= r}
        return SyncTimeout(self.plan.rounds[r][1], behind, self.plan.timeout)


class Watchdog:
    """Fails a run in which no epoch has completed, and no instance has arrived at a barrier,
    anywhere for ``timeout`` seconds: it records a ``SyncTimeout`` as the run's root cause, sets the
    cancel flag (every kernel stops within a step) and calls ``abort`` (which breaks the barrier
    the workers wait at).  A run that keeps progressing never fails, whatever the length of a
    round.  It reads only the shared counters, so it watches workers in other processes too.

    It watches from a thread of its own (``with Watchdog(ctx):``, while the calling thread
    coordinates worker processes or actors) or from the calling thread while that waits for its
    worker threads to end (``join``), which spares a short run a thread to start and stop."""

    POLL = 0.05     # seconds between looks at the counters

    def __init__(self, ctx: Context, abort=lambda: None):
        self.ctx, self.abort = ctx, abort
        self._stop = threading.Event()
        self._thread = None
        self._beat, self._since = -1, monotonic()

    @property
    def _poll(self) -> float | None:
        timeout = self.ctx.plan.timeout
        return None if timeout is None else min(self.POLL, timeout / 4)

    def check(self) -> bool:
        """Look at the counters once; False if the run has stalled (and is now failed)."""
        ctx = self.ctx
        beat = int(ctx.epochs_done.sum()) + int(ctx.arrived.sum())
        if beat != self._beat:
            self._beat, self._since = beat, monotonic()
        elif monotonic() - self._since >= ctx.plan.timeout and not ctx.cancel.is_set():
            ctx.failure.record(ctx.stalled())
            ctx.cancel.set()
            self.abort()
            return False
        return True

    def join(self, threads) -> None:
        """Wait in the calling thread until every one of ``threads`` has ended, watching meanwhile;
        returns early once the run has stalled.  Ctrl-C interrupts the wait."""
        poll = self._poll
        for t in threads:
            t.join(poll)
            while t.is_alive():
                if not self.check():
                    return
                t.join(poll)

    def _watch(self) -> None:
        while not self._stop.wait(self._poll) and self.check():
            pass

    def __enter__(self) -> "Watchdog":
        if self.ctx.plan.timeout is not None:
            self._thread = threading.Thread(target=self._watch, name="fastffnn-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()


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
                if ctx.cancel.is_set():
                    return False        # the kernel may have stopped inside the span
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
        ctx.arrived[instances] = r + 1
    return instances


def run_instances(ctx: Context, worker: int, group: list, r: int, scratch) -> list:
    """A worker's fixed share (serial and processes): round r of every instance of ``group``,
    which then arrive together; returns the instances that finished the round."""
    ran = run_spans(ctx, worker, group, *ctx.plan.rounds[r], scratch)
    return arrive(ctx, worker, group, r) if ran else []


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


def coordinate(ctx: Context, barrier) -> bool:
    """The calling thread's side of every round where it is a party of the barrier (the process
    coordinator's; the watchdog keeps the deadline).  Returns whether every round completed; a
    failure is recorded in ``ctx.failure``."""
    for _ in ctx.plan.rounds:
        try:
            barrier.wait()
        except BrokenBarrierError:
            return False    # a party failed or the watchdog found a stall (recorded by them)
        except Exception as exc:
            ctx.failure.record(exc)     # the action, run here, raised (already recorded) -- or anything else
            return False
    return True


@functools.lru_cache(maxsize=None)
def _blas() -> ThreadpoolController:
    """The BLAS/OpenMP libraries of this process, found once: finding them scans the loaded
    libraries, milliseconds that a short run would otherwise pay on every call."""
    return ThreadpoolController()


@dataclass
class Start:
    """What a run starts from, in the run's dtype: data X (n, F) and encoded targets T (n, K),
    parameters (N, P), the ``TrainState`` (optimizer state, batch-order generators, sample order,
    hyperparameter rows, data digests), and the history and timing so far -- empty for a fresh
    run, which is a resumed run at epoch 0."""

    X: np.ndarray
    T: np.ndarray
    params: np.ndarray
    state: TrainState
    history: History
    timing: Timing


def run(plan: Plan, backend, start: Start, sync, hyperparams: list, classes: np.ndarray, config: dict,
        progress: bool = False, checkpoint=None) -> TrainResult:
    """Allocate the run's shared arrays on ``backend``, fill them from ``start``, run every round
    with ``sync`` (``fastffnn.sync.SyncSettings``) as the barrier action, and build the result.
    ``checkpoint`` (a ``fastffnn.checkpoint.Writer`` or None) is offered the run's result at every
    sync point."""
    from .sync import SyncAction        # sync imports this module's names for its type hints only
    e0 = plan.start
    with backend.allocate(plan.array_specs()) as arrays:
        ctx = Context(plan, arrays)
        state = start.state
        ctx.X[...], ctx.T[...], ctx.params[...] = start.X, start.T, start.params
        ctx.moments[...], ctx.steps[...], ctx.rng[...], ctx.order[...], ctx.hyper[...] = (
            state.moments, state.steps, state.rng, state.order, state.hyper)
        ctx.losses[:, :e0] = start.history.losses
        ctx.epochs_done[...] = e0
        history = start.history.continued(ctx.losses)
        if e0 in plan.snapshots:
            history.snapshots.setdefault(e0, ctx.params.copy())
        n = plan.n_samples

        def result_at(epoch: int, wall: float) -> TrainResult:
            """The run as it stands at ``epoch`` (a sync point), ``wall`` seconds into this part."""
            # as given, unless a callback changed their rows since the run started
            changed = (ctx.hyper != state.hyper).any(axis=1)
            final = [type(hp).from_row(row, n, hp.seed) if c else hp
                     for row, hp, c in zip(ctx.hyper, hyperparams, changed)]
            done = replace(state, moments=ctx.moments.copy(), steps=ctx.steps.copy(), rng=ctx.rng.copy(),
                           order=ctx.order.copy(), hyper=ctx.hyper.copy(), target_epochs=plan.epochs)
            timing = Timing(start.timing.wall + wall, start.timing.compute + ctx.compute,
                            start.timing.barrier_wait + ctx.waited)
            return TrainResult(Ensemble(plan.topology, ctx.params.copy(), final, classes),
                               history.finish(ctx.losses[:, :epoch]), timing, {**config, **backend.info, "epochs": epoch}, final,
                               done)

        began = perf_counter()

        def at_sync(epoch: int) -> None:
            # the end is written below, with the backend's wall; mid-run, wall counts from before
            # the kernels' warm-up (which the backend leaves out of its own)
            if checkpoint is not None and epoch < plan.epochs and checkpoint.due(epoch):
                checkpoint.write(result_at(epoch, perf_counter() - began))

        bar = _progress_bar(progress, plan, backend.name)
        action = SyncAction(ctx, sync, history, bar, at_sync)
        try:
            with _blas().limit(limits=1) if backend.parallel else nullcontext():
                wall = backend.run(ctx, action)
        finally:
            if bar is not None:
                bar.close()
        result = result_at(plan.epochs, wall)
    if checkpoint is not None:
        checkpoint.write(result)
    return result


def _progress_bar(progress: bool, plan: Plan, backend: str):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=plan.epochs, initial=plan.start, unit="epoch",
                desc=f"{plan.instances} instances ({backend})")
