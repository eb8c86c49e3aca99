"""The processes backend: a warm pool of worker processes over shared memory, coordinated from
the parent.

Workers are started as ``python -c _worker.BOOTSTRAP`` -- never by re-running the user's main
module, so a script without the ``if __name__ == "__main__":`` guard, ``python -``, ``python -c``
and notebooks all work -- and stay alive between runs (``WorkerPool``): the kernels are loaded
once per process, and a run after the first one starts in milliseconds.  The pool grows when a
run needs more workers, replaces a worker that died, and closes at interpreter exit or with
``fastffnn.shutdown()``.

Each run's data X, T and state arrays (the (N, P) parameters included) live in ``/dev/shm``
segments that the parent creates, names with its pid and a run id, and unlinks at the end of the
run -- so the data is stored once whatever N is, and a segment left by a killed parent is swept
by the next run.  No lock is shared with a worker: the parent's ``ProcessCoordinator`` waits on
every worker's connection, on which a dead worker reads as end-of-file, so a worker that dies --
even SIGKILLed in the sync section -- is seen at once, never waited for.  A failed run sets the
shared cancel flag, which every worker's kernels read at every step, and lets each worker report
how it ended; a worker that does not, within ``DRAIN_TIMEOUT``, is killed and replaced next run.
"""
from __future__ import annotations

import atexit
import contextlib
import mmap
import multiprocessing as mp
import os
import secrets
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import wait as wait_any
from threading import BrokenBarrierError
from time import monotonic

import numpy as np

from ..driver import Context, Watchdog, coordinate
from ..errors import InstanceFailed, SyncTimeout
from ._worker import BOOTSTRAP
from .base import Backend

SHM_DIR = "/dev/shm"
PREFIX = "fastffnn"
STARTUP_TIMEOUT = 120.0     # seconds a worker may take to start (imports, loading kernels)
DRAIN_TIMEOUT = 3.0         # seconds a worker may take to report how it ended after a failure
POLL = 0.05                 # seconds between looks at the cancel flag while waiting for workers


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:          # real-time signals have no name
        return f"{number}"


class WorkerDied(RuntimeError):
    """The cause of an InstanceFailed whose worker process ended before completing its work."""


class WorkerStartFailed(RuntimeError):
    """The cause of an InstanceFailed whose worker process failed before it was ready: the
    worker's own traceback, as text."""


class RemoteTraceback(Exception):
    """Set as ``__cause__`` of an exception received from a worker: its traceback there, as text
    (as ``concurrent.futures`` does)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.text}\"\"\""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_segments() -> list:
    """Unlink segments left by runs whose process no longer exists (a killed parent)."""
    swept = []
    for entry in os.listdir(SHM_DIR) if os.path.isdir(SHM_DIR) else ():
        parts = entry.split("_")
        if parts[0] == PREFIX and len(parts) > 2 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIR, entry))
                swept.append(entry)
    return swept


def map_segment(path: str, shape: tuple, dtype, create: bool) -> np.ndarray:
    """An array over a /dev/shm file; the mapping lives as long as the array does."""
    nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
    fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
    try:
        if create:
            os.posix_fallocate(fd, 0, nbytes)   # fails now with ENOSPC, not later with SIGBUS
        buf = mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)
    return np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


class PooledWorker:
    """One worker process: its ``Popen``, its end of a socket pair (``conn``, on which its death
    reads as end-of-file), and the write end of the pipe whose closing tells it the parent is gone."""

    def __init__(self):
        parent, child = mp.Pipe()           # a socket pair
        watch_r, self._watch_w = os.pipe()
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", BOOTSTRAP, str(child.fileno()), str(watch_r)],
                                         pass_fds=(child.fileno(), watch_r))
        finally:
            child.close()
            os.close(watch_r)
        self.conn, self.pid = parent, self.proc.pid
        self.conn.send(sys.path)
        self.started = False

    def exit_code(self, timeout: float = 1.0) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(timeout)
        return None

    def close(self, kill: bool = False) -> None:
        """Ask it to exit (or kill it), reap it, and close both descriptors."""
        if not kill:
            with contextlib.suppress(OSError):
                self.conn.send(("exit",))
            kill = self.exit_code(5.0) is None
        if kill:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()
        os.close(self._watch_w)


class WorkerPool:
    """The warm pool: workers stay alive between runs of one Python process.  ``acquire`` hands a
    run idle workers (starting what is missing, replacing the dead), ``release`` takes them back,
    a worker that did not end its run cleanly is ``discard``-ed (killed)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.idle: list = []
        self.busy: set = set()

    def acquire(self, n: int, groups: tuple) -> list:
        with self._lock:
            workers, self.idle = self.idle[:n], self.idle[n:]
            workers += [PooledWorker() for _ in range(n - len(workers))]
            self.busy.update(workers)
        try:
            replaced = self._ready(workers, groups, pinged=[w for w in workers if w.started])
            for i in replaced:          # died just before this run: start a fresh one in its place
                self.discard(workers[i])
                workers[i] = PooledWorker()
                self.busy.add(workers[i])
            self._ready(workers, groups, pinged=[])
        except BaseException:
            for worker in workers:
                self.discard(worker)
            raise
        return workers

    @staticmethod
    def _ready(workers: list, groups: tuple, pinged: list) -> list:
        """Wait until every new worker has said "ready", and every one in ``pinged`` has answered
        a ping (a worker killed between runs may not have closed its connection yet when the run
        starts: its answer is then end-of-file).  A new worker that fails or dies before raises
        ``InstanceFailed`` with its own traceback (or exit code), naming its first instance;
        returns the positions of the pinged workers that turned out dead."""
        for worker in pinged:
            with contextlib.suppress(OSError):
                worker.conn.send(("ping",))
        dead = []
        deadline = monotonic() + STARTUP_TIMEOUT
        pending = {w.conn: (i, w) for i, w in enumerate(workers) if not w.started or w in pinged}
        while pending:
            ready = wait_any(list(pending), timeout=max(0.0, deadline - monotonic()))
            if not ready:
                missing = [k for i, _ in pending.values() for k in groups[i]]
                raise SyncTimeout(0, dict.fromkeys(missing, 0), STARTUP_TIMEOUT, startup=True)
            for conn in ready:
                i, worker = pending.pop(conn)
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    msg = ("died",)
                if msg[0] == "ready":
                    worker.started = True
                    continue
                if worker in pinged:
                    dead.append(i)
                    continue
                cause = (WorkerStartFailed(f"worker process {worker.pid} failed to start:\n{msg[2]}")
                         if msg[0] == "failed" else
                         WorkerDied(f"worker process {worker.pid} exited with code {worker.exit_code()} "
                                    f"before it was ready"))
                raise InstanceFailed(groups[i][0], 0, cause)
        return dead

    def release(self, worker: PooledWorker) -> None:
        with self._lock:
            self.busy.discard(worker)
            self.idle.append(worker)

    def discard(self, worker: PooledWorker) -> None:
        with self._lock:
            self.busy.discard(worker)
        worker.close(kill=True)

    def shutdown(self) -> None:
        """Close every idle worker (a run in progress keeps its own until it ends)."""
        with self._lock:
            idle, self.idle = self.idle, []
        for worker in idle:
            worker.close()


_POOL = WorkerPool()
atexit.register(_POOL.shutdown)


def shutdown() -> None:
    """Close the processes backend's warm pool of worker processes (it restarts on the next run)."""
    _POOL.shutdown()


def _received_failure(exc: BaseException, text: str) -> BaseException:
    """A worker's failure with the traceback it had there: ``InstanceFailed.__cause__`` is the
    original exception, whose own ``__cause__`` becomes that traceback."""
    cause = exc.cause if isinstance(exc, InstanceFailed) else exc
    if text and isinstance(cause, BaseException) and cause.__cause__ is None:
        cause.__cause__ = RemoteTraceback(text)
    return exc


class ProcessCoordinator:
    """The parent's side: the allreduce contract of ``ConditionBarrier`` (all arrive, the action
    runs once, all go on) over each worker's connection.  ``workers`` have ``conn``, ``pid`` and
    ``exit_code(timeout)``.  A worker ends its run by sending "done", "cancelled" or "failed";
    ``ended`` holds those that did."""

    END = ("done", "cancelled", "failed")

    def __init__(self, ctx: Context, workers: list, action):
        self.ctx, self.workers, self.action = ctx, workers, action
        self.ended: set = set()
        self.awaiting: set = set()      # arrived, waiting for the verdict

    def _gather(self, expect: str, deadline: float | None = None) -> None:
        """Wait until every worker has sent ``expect``; a death, a failure, the cancel flag or
        ``deadline`` breaks (the workers still missing are then left in ``pending``)."""
        self.pending = pending = set(range(len(self.workers)))
        while pending:
            if self.ctx.cancel.is_set():
                raise BrokenBarrierError        # the watchdog, or another failure
            timeout = POLL if deadline is None else min(POLL, max(0.0, deadline - monotonic()))
            ready = wait_any([self.workers[w].conn for w in pending], timeout=timeout)
            if not ready and deadline is not None and monotonic() >= deadline:
                raise BrokenBarrierError
            for w in sorted(w for w in pending if self.workers[w].conn in ready):
                msg = self._receive(w)
                if msg is None:
                    self._died(w)
                elif msg[0] == "failed":
                    self.ended.add(w)
                    self.ctx.failure.record(_received_failure(*msg[1:]))
                    raise BrokenBarrierError
                elif msg[0] != expect:
                    if msg[0] in self.END:
                        self.ended.add(w)
                    self._died(w, f"stopped early (sent {msg[0]!r} when {expect!r} was due)")
                if expect == "arrive":
                    self.awaiting.add(w)
                elif expect in self.END:
                    self.ended.add(w)
                pending.discard(w)

    def _receive(self, w: int):
        """The worker's next message; None when it has none because it is gone."""
        conn = self.workers[w].conn
        try:
            return conn.recv()
        except (EOFError, OSError):
            return None
        except Exception as exc:        # it arrived but cannot be unpickled here
            instance, epoch, group = self._where(w)
            self.ended.add(w)
            return "failed", InstanceFailed(instance, epoch, WorkerDied(
                f"worker process {self.workers[w].pid} (instances {group}) sent a message that could not "
                f"be unpickled: {exc!r}")), ""

    def _where(self, w: int) -> tuple:
        """(instance, epoch, instances) of worker ``w``: where it was last seen."""
        instance, epoch = (int(v) for v in self.ctx.position[w])
        group = list(self.ctx.plan.groups[w])
        return group[0] if instance < 0 else instance, epoch, group

    def _died(self, w: int, how: str | None = None) -> None:
        worker = self.workers[w]
        if how is None:
            code = worker.exit_code()
            how = (f"was killed by signal {_signal_name(-code)}" if code is not None and code < 0
                   else f"exited with code {code} before completion")
        instance, epoch, group = self._where(w)
        self.ctx.failure.record(InstanceFailed(instance, epoch, WorkerDied(
            f"worker process {worker.pid} (instances {group}) {how}")))
        raise BrokenBarrierError

    def start(self) -> None:
        """Wait until every worker has mapped the run's memory and loaded its kernels."""
        try:
            self._gather("ready", monotonic() + STARTUP_TIMEOUT)
        except BrokenBarrierError:
            if self.ctx.failure.exc is None:
                missing = [k for w in sorted(self.pending) for k in self.ctx.plan.groups[w]]
                self.ctx.failure.record(SyncTimeout(0, dict.fromkeys(missing, 0), STARTUP_TIMEOUT, startup=True))
            raise

    def wait(self) -> None:
        self._gather("arrive")
        self.action()
        for w in sorted(self.awaiting):
            with contextlib.suppress(OSError):      # a dead worker is seen at the next gather
                self.workers[w].conn.send("go")
        self.awaiting.clear()

    def finish(self) -> None:
        self._gather("done")

    def drain(self) -> list:
        """After a failed run: let every worker that has not ended report how it did (the cancel
        flag is set, so its kernels stop within a step; one waiting for a verdict gets "abort").
        Returns the workers that ended cleanly; the others are dead or were still busy after
        ``DRAIN_TIMEOUT`` seconds."""
        deadline = monotonic() + DRAIN_TIMEOUT
        clean = set(self.ended)
        for w in sorted(self.awaiting):
            with contextlib.suppress(OSError):
                self.workers[w].conn.send("abort")
        left = {self.workers[w].conn: w for w in range(len(self.workers)) if w not in self.ended}
        while left and monotonic() < deadline:
            for conn in wait_any(list(left), timeout=max(0.0, deadline - monotonic())):
                w = left[conn]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    del left[conn]              # died
                    continue
                except Exception:
                    msg = ("failed",)           # unpicklable, but the worker did end its run
                if msg[0] == "arrive":         # it waits for a verdict
                    with contextlib.suppress(OSError):
                        conn.send("abort")
                elif msg[0] in self.END:
                    clean.add(w)
                    del left[conn]
        return [self.workers[w] for w in sorted(clean)]


class ProcessesBackend(Backend):
    """``workers`` processes from the warm pool, over shared memory, coordinated from the parent."""

    name = "processes"
    parallel = True

    @contextlib.contextmanager
    def allocate(self, specs: dict):
        sweep_stale_segments()
        run = f"{PREFIX}_{os.getpid()}_{secrets.token_hex(4)}"
        needed = sum(max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize) for shape, dtype in specs.values())
        self.segments, arrays = {}, {}
        try:
            for name, (shape, dtype) in specs.items():
                path = os.path.join(SHM_DIR, f"{run}_{name}")
                try:
                    arrays[name] = map_segment(path, shape, dtype, create=True)
                except OSError as exc:
                    free = os.statvfs(SHM_DIR).f_bavail * os.statvfs(SHM_DIR).f_frsize
                    raise MemoryError(
                        f"Could not create a shared-memory segment of {np.prod(shape) * np.dtype(dtype).itemsize} "
                        f"bytes for {name!r} in {SHM_DIR}: {exc.strerror}. The run needs {needed} bytes and "
                        f"{free} are free; enlarge {SHM_DIR}, use fewer instances, or use "
                        f"backend='threads'.") from exc
                finally:
                    if os.path.exists(path):
                        self.segments[name] = (path, shape, dtype)
            yield arrays
        finally:
            for path, _, _ in self.segments.values():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def execute(self, ctx: Context, action) -> None:
        groups = ctx.plan.groups
        workers = _POOL.acquire(len(groups), groups)
        coordinator = ProcessCoordinator(ctx, workers, action)
        clean = workers
        try:
            for w, worker in enumerate(workers):
                worker.conn.send(("run", ctx.plan, self.segments, w))
            try:
                coordinator.start()
                with Watchdog(ctx):
                    if coordinate(ctx, coordinator):
                        coordinator.finish()
            except BrokenBarrierError:
                pass
        finally:
            if ctx.failure.exc is not None or len(coordinator.ended) < len(workers):
                ctx.cancel.set()
                clean = coordinator.drain()
            for worker in workers:
                if worker in clean:
                    _POOL.release(worker)
                else:
                    _POOL.discard(worker)
        ctx.raise_failure()
