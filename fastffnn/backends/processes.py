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
import threading
import traceback
from multiprocessing.connection import wait as wait_any
from threading import BrokenBarrierError
from time import monotonic

import numpy as np
from threadpoolctl import threadpool_limits

from .backends import Backend
from .driver import Context, coordinate, worker_loop
from .errors import InstanceFailed, SyncTimeout

SHM_DIR = "/dev/shm"
PREFIX = "fastffnn"
STARTUP_TIMEOUT = 120.0     # seconds a worker may take to start (imports, loading kernels)
EXIT_TIMEOUT = 10.0         # seconds a worker that reported "done" may take to exit


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:          # real-time signals have no name
        return f"{number}"


class WorkerDied(RuntimeError):
    """The cause of an InstanceFailed whose worker process ended before completing its work."""


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
        """No deadline here: the parent keeps it, and kills this worker when a round fails."""
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


def _portable(exc: BaseException) -> tuple:
    """("failed", exception, traceback text), the exception replaced by the text when it does not
    survive pickling (it holds a lock, or cannot be rebuilt from its args)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        exc = (InstanceFailed(exc.instance, exc.epoch, text) if isinstance(exc, InstanceFailed)
               else RuntimeError(text))
    return "failed", exc, text


def _exit_with_parent() -> None:
    """End this worker when the parent dies, even while a kernel or a hang holds its main thread
    (the parent's segments are then swept by the next run)."""
    parent = mp.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (wait_any([parent.sentinel]), os._exit(1)),
                         name="fastffnn-parent-watch", daemon=True).start()


def _worker_main(plan, segments: dict, worker: int, conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C is the parent's to handle
    _exit_with_parent()
    group = list(plan.groups[worker])
    with threadpool_limits(1):
        ctx = Context(plan, attach(segments))
        try:
            scratch = ctx.scratch()
            ctx.run_span(group[0], 0, 0, scratch)   # load the kernel before the first round's clock
        except Exception as exc:
            ctx.failure.record(InstanceFailed(group[0], 0, exc))
        else:
            conn.send(("ready",))
            worker_loop(ctx, worker, group, PipeBarrier(conn, ctx, worker), scratch=scratch)
        failure = ctx.failure.exc
    with contextlib.suppress(OSError):
        conn.send(_portable(failure) if failure is not None else ("done",))


def _received_failure(exc: BaseException, text: str) -> BaseException:
    """A worker's failure with the traceback it had there: ``InstanceFailed.__cause__`` is the
    original exception, whose own ``__cause__`` becomes that traceback."""
    cause = exc.cause if isinstance(exc, InstanceFailed) else exc
    if text and isinstance(cause, BaseException) and cause.__cause__ is None:
        cause.__cause__ = RemoteTraceback(text)
    return exc


class ProcessCoordinator:
    """The parent's side: the allreduce contract of ``ConditionBarrier`` (all arrive, the action
    runs once, all go on) over pipes, watching every worker's sentinel."""

    def __init__(self, ctx: Context, procs: list, conns: list, action):
        self.ctx, self.procs, self.conns, self.action = ctx, procs, conns, action

    def _gather(self, expect: str, timeout: float | None) -> None:
        """Wait until every worker has sent ``expect``; a death, failure or timeout breaks (the
        workers still missing are then left in ``pending``)."""
        deadline = None if timeout is None else monotonic() + timeout
        self.pending = pending = set(range(len(self.procs)))
        while pending:
            owners = {}
            for w in pending:
                owners[self.conns[w]] = owners[self.procs[w].sentinel] = w
            left = None if deadline is None else max(0.0, deadline - monotonic())
            ready = wait_any(list(owners), timeout=left)
            if not ready:
                raise BrokenBarrierError        # timed out: the driver names the missing workers
            for w in sorted({owners[obj] for obj in ready}):
                # the pipe first: a worker whose last message is waiting there has not died early
                msg = self._receive(w)
                if msg is None:
                    self._died(w)
                elif msg[0] == "failed":
                    self.ctx.failure.record(_received_failure(*msg[1:]))
                    raise BrokenBarrierError
                elif msg[0] != expect:
                    self._died(w, f"stopped early (sent {msg[0]!r} when {expect!r} was due)")
                pending.discard(w)

    def _receive(self, w: int):
        """The worker's next message; None when it has none because it is gone."""
        conn = self.conns[w]
        try:
            return conn.recv() if conn.poll() else None
        except (EOFError, OSError):
            return None
        except Exception as exc:        # it arrived but cannot be unpickled here
            instance, epoch, group = self._where(w)
            return "failed", InstanceFailed(instance, epoch, WorkerDied(
                f"worker process {self.procs[w].pid} (instances {group}) sent a message that could not "
                f"be unpickled: {exc!r}")), ""

    def _where(self, w: int) -> tuple:
        """(instance, epoch, instances) of worker ``w``: where it was last seen."""
        instance, epoch = (int(v) for v in self.ctx.position[w])
        group = list(self.ctx.plan.groups[w])
        return group[0] if instance < 0 else instance, epoch, group

    def _died(self, w: int, how: str | None = None) -> None:
        proc = self.procs[w]
        if how is None:
            proc.join(1.0)
            code = proc.exitcode
            how = (f"was killed by signal {_signal_name(-code)}" if code is not None and code < 0
                   else f"exited with code {code} before completion")
        instance, epoch, group = self._where(w)
        self.ctx.failure.record(InstanceFailed(instance, epoch, WorkerDied(
            f"worker process {proc.pid} (instances {group}) {how}")))
        raise BrokenBarrierError

    def start(self) -> None:
        """Wait until every worker has started and loaded its kernels; spawning is not part of
        the first round's timeout, but has a deadline of its own."""
        timeout = self.ctx.plan.timeout
        timeout = None if timeout is None else max(timeout, STARTUP_TIMEOUT)
        try:
            self._gather("ready", timeout)
        except BrokenBarrierError:
            missing = [k for w in sorted(self.pending) for k in self.ctx.plan.groups[w]]
            self.ctx.failure.record(SyncTimeout(0, missing, timeout, startup=True))
            raise

    def wait(self) -> None:
        self._gather("arrive", self.ctx.plan.timeout)
        self.action()
        for conn in self.conns:
            with contextlib.suppress(OSError):      # a dead worker is seen at the next gather
                conn.send("go")

    def finish(self) -> None:
        self._gather("done", self.ctx.plan.timeout)

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
            try:
                coordinator.start()
            except BrokenBarrierError:
                failed = 0
            else:
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
                    proc.join(None if failed is not None else EXIT_TIMEOUT)
                    if proc.exitcode is None:   # "done" but not gone: do not wait for it forever
                        proc.kill()
                        proc.join()
                    proc.close()
            for parent, child in pipes:
                parent.close()
                child.close()
        ctx.raise_failure(failed)
