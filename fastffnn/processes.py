"""The processes backend: ``spawn`` workers over shared memory, coordinated from the parent.

The data X, T and every state array (the (N, P) parameters included) live in ``/dev/shm``
segments that the parent creates, names with its pid and a run id, and unlinks -- so the data is
stored once whatever N is, and a segment left by a killed run is swept by the next one.  No lock is
shared with a worker: the parent's ``ProcessCoordinator`` waits on every worker's pipe *and* its
process sentinel (``multiprocessing.connection.wait``), so a worker that dies -- even SIGKILLed in
the sync section -- is seen at once, never waited for.
"""
from __future__ import annotations

import contextlib
import mmap
import multiprocessing as mp
import os
import pickle
import secrets
import signal
import traceback
from multiprocessing.connection import wait as wait_any
from threading import BrokenBarrierError
from time import monotonic

import numpy as np
from threadpoolctl import threadpool_limits

from .backends import Backend
from .driver import Context, coordinate, worker_loop
from .errors import InstanceFailed

SHM_DIR = "/dev/shm"
PREFIX = "fastffnn"


class WorkerDied(RuntimeError):
    """The cause of an InstanceFailed whose worker process ended before completing its work."""


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


def _map(path: str, shape: tuple, dtype, create: bool) -> np.ndarray:
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


def attach(segments: dict) -> dict:
    """The worker's views of the parent's segments: name -> (path, shape, dtype)."""
    return {name: _map(path, shape, dtype, create=False) for name, (path, shape, dtype) in segments.items()}


class PipeBarrier:
    """The worker's side of the coordinator: arrive, then wait for the parent's verdict."""

    def __init__(self, conn, ctx: Context, worker: int):
        self.conn, self.ctx, self.worker = conn, ctx, worker
        self.round = 0

    def wait(self) -> None:
        ctx = self.ctx
        e0, e1 = ctx.plan.rounds[self.round]
        self.round += 1
        self.conn.send(("arrive",))
        for fault in ctx.plan.faults_at(ctx.plan.groups[self.worker], e0, e1, "sync"):
            ctx.fire(fault)         # inside the sync section: arrived, verdict not yet received
        try:
            if ctx.plan.timeout is None or self.conn.poll(ctx.plan.timeout):
                if self.conn.recv() == "go":
                    return
        except (EOFError, OSError):
            pass            # the parent is gone
        raise BrokenBarrierError

    def abort(self) -> None:
        """The failure itself is sent to the parent when the worker loop returns."""


def _portable(exc: BaseException) -> BaseException:
    """The exception if it pickles; otherwise the same failure with its traceback as text."""
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.dumps(exc)
        return exc
    except Exception:
        if isinstance(exc, InstanceFailed):
            return InstanceFailed(exc.instance, exc.epoch, text)
        return RuntimeError(text)


def _worker_main(plan, segments: dict, worker: int, conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the parent's to handle
    with threadpool_limits(1):
        ctx = Context(plan, attach(segments))
        barrier = PipeBarrier(conn, ctx, worker)
        worker_loop(ctx, worker, list(plan.groups[worker]), barrier)
        failure = ctx.failure.exc
    with contextlib.suppress(OSError):
        conn.send(("failed", _portable(failure)) if failure is not None else ("done",))


class ProcessCoordinator:
    """The parent's side: the allreduce contract of ``ConditionBarrier`` (all arrive, the action
    runs once, all go on) over pipes, watching every worker's sentinel."""

    def __init__(self, ctx: Context, procs: list, conns: list, action):
        self.ctx, self.procs, self.conns, self.action = ctx, procs, conns, action
        self.round = 0

    def _gather(self, expect: str) -> None:
        """Wait until every worker has sent ``expect``; a death, failure or timeout breaks."""
        ctx, timeout = self.ctx, self.ctx.plan.timeout
        deadline = None if timeout is None else monotonic() + timeout
        pending = set(range(len(self.procs)))
        while pending:
            owners = {}
            for w in pending:
                owners[self.conns[w]] = owners[self.procs[w].sentinel] = w
            left = None if deadline is None else max(0.0, deadline - monotonic())
            ready = wait_any(list(owners), timeout=left)
            if not ready:
                raise BrokenBarrierError        # timed out: the driver names the missing workers
            for obj in ready:
                w = owners[obj]
                if w not in pending:
                    continue
                msg = self._receive(w) if obj is self.conns[w] else None
                if msg is None:
                    self._died(w)
                elif msg[0] == "failed":
                    exc = msg[1]
                    if isinstance(exc, InstanceFailed) and isinstance(exc.cause, BaseException):
                        exc.__cause__ = exc.cause
                    ctx.failure.record(exc)
                    raise BrokenBarrierError
                elif msg[0] == expect:
                    pending.discard(w)

    def _receive(self, w: int):
        try:
            return self.conns[w].recv()
        except (EOFError, OSError):
            return None

    def _died(self, w: int) -> None:
        proc = self.procs[w]
        proc.join(1.0)
        code = proc.exitcode
        how = (f"was killed by signal {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with code {code} before completion")
        instance, epoch = (int(v) for v in self.ctx.position[w])
        group = list(self.ctx.plan.groups[w])
        instance = group[0] if instance < 0 else instance
        self.ctx.failure.record(InstanceFailed(instance, epoch, WorkerDied(
            f"worker process {proc.pid} (instances {group}) {how}")))
        raise BrokenBarrierError

    def wait(self) -> None:
        self._gather("arrive")
        self.action()
        self.round += 1
        for conn in self.conns:
            with contextlib.suppress(OSError):      # a dead worker is seen at the next gather
                conn.send("go")

    def finish(self) -> None:
        self._gather("done")

    def abort(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()


class ProcessesBackend(Backend):
    """``workers`` spawned processes over shared memory, coordinated from the parent."""

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
                    arrays[name] = _map(path, shape, dtype, create=True)
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
        spawn = mp.get_context("spawn")
        pipes = [spawn.Pipe() for _ in ctx.plan.groups]
        procs = [spawn.Process(target=_worker_main, args=(ctx.plan, self.segments, w, child), daemon=True,
                               name=f"fastffnn-worker-{w}") for w, (_, child) in enumerate(pipes)]
        coordinator = ProcessCoordinator(ctx, procs, [parent for parent, _ in pipes], action)
        failed = -1             # until the rounds complete: any exit from here kills the workers
        try:
            for proc in procs:
                proc.start()
            for _, child in pipes:
                child.close()
            failed = coordinate(ctx, coordinator)
            if failed is None:
                try:
                    coordinator.finish()
                except BrokenBarrierError:
                    failed = len(ctx.plan.rounds) - 1
        finally:
            if failed is not None:
                coordinator.abort()
            for proc in procs:
                if proc.pid is not None:        # started
                    proc.join()
                    proc.close()
            for parent, child in pipes:
                parent.close()
        ctx.raise_failure(failed)
