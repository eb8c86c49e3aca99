"""RELIABILITY.md's fault matrix, rows 1-15 and 23-26, on every backend where the row applies
(rows 3, 26-29 on the runtime's own terms: ``test_runtime.py``).

Faults are injected with ``fastffnn._faults.inject``.  "kill" and "exit" end the process they
run in, so they are injected on the processes backend only; rows that kill or interrupt the
calling process itself (7, 8), or could abort it (12), or need a fresh Numba cache (25) run a
small script in a subprocess.  The autouse ``no_residue`` fixture (conftest.py) checks that no
thread, child process, /dev/shm segment or file is left behind by any of them."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastffnn as ff
from fastffnn.backends import processes
from fastffnn._faults import Fault, InjectedFault, inject
from fastffnn.kernels import config as kernel_config
from fastffnn.sync import combine, sync_columns
from naive import make_data

from residue import child_pids, pid_running, shm_segments

pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

PARALLEL = ("threads", "processes", "prange")
ALL = ("serial",) + PARALLEL
N, EPOCHS, EVERY = 4, 60, 10
GROUPS = ([0, 1], [2, 3])           # N = 4 instances over workers = 2
# "promptly": well under the 120 s timeout of these runs (starting the worker pool takes seconds on
# 2 busy cores)
PROMPT = {"serial": 10.0, "threads": 10.0, "prange": 10.0, "processes": 60.0}


X, Y = make_data()


def train(backend, faults=(), **kw):
    options = dict(hidden=(8, 8), instances=N, epochs=EPOCHS, sync_every=EVERY, workers=2, timeout=120.0,
                   sync="average", sync_layers="last", seed=5, hyperparams=ff.HyperParams(lr=0.05))
    options.update(kw)
    with inject(*faults):
        return ff.train(X, Y, backend=backend, **options)


def fails(exc_type, backend, faults=(), **kw):
    """Run, expect ``exc_type``; returns (exception, seconds)."""
    t = time.monotonic()
    with pytest.raises(exc_type) as info:
        train(backend, faults, **kw)
    return info.value, time.monotonic() - t


_clean = {}


def clean(**kw):
    """The fault-free serial run (cached per configuration)."""
    key = tuple(sorted(kw.items()))
    if key not in _clean:
        _clean[key] = train("serial", **kw)
    return _clean[key]


def assert_identical(res, ref):
    assert res.ensemble.params.tobytes() == ref.ensemble.params.tobytes()
    assert res.history.losses.tobytes() == ref.history.losses.tobytes()
    assert res.history.global_loss.tobytes() == ref.history.global_loss.tobytes()


def snapshot_params(into: dict):
    """A callback keeping a reference to the run's live (N, P) parameters: after a failure they
    show what each instance was left with."""
    return lambda point: into.setdefault("params", point._ctx.params)


# -- rows 1 and 15: an instance raises; the next run is clean -----------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ALL)
def test_instance_raises_then_next_run_is_clean(backend):
    err, seconds = fails(ff.InstanceFailed, backend, [Fault(3, 37, "kernel", "raise")])
    assert (err.instance, err.epoch) == (3, 37)
    assert isinstance(err.__cause__, InjectedFault) and err.__cause__ is err.cause
    assert (err.__cause__.instance, err.__cause__.epoch) == (3, 37)
    assert seconds < PROMPT[backend]
    if backend == "processes":          # the worker's traceback comes along
        assert "InjectedFault" in str(err.__cause__.__cause__)
    # row 15: a new run after the failed one succeeds and equals a clean run
    assert_identical(train(backend), clean())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend,where", [("threads", "barrier"), ("processes", "sync")])
def test_instance_raises_outside_the_kernel(backend, where):
    err, _ = fails(ff.InstanceFailed, backend, [Fault(2, 44, where, "raise")])
    assert (err.instance, err.epoch) == (2, 44)
    assert isinstance(err.__cause__, InjectedFault)


# -- row 2: a hang is a stall, naming every instance behind and the epoch it reached -------------

TIMEOUT = 1.5


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend,where", [("serial", "kernel"), ("threads", "kernel"), ("threads", "barrier"),
                                           ("processes", "kernel"), ("processes", "barrier"),
                                           ("prange", "kernel")])
def test_hang_times_out_naming_missing_instances(backend, where):
    err, seconds = fails(ff.SyncTimeout, backend, [Fault(3, 25, where, "hang")], timeout=TIMEOUT)
    # threads share a round's instances, so the other worker finishes every instance but the hung
    # one; serial and a process run their fixed group in turn; prange runs all instances in one
    # call, which the fault cuts at its epoch
    hung = 25 if where == "kernel" else 30      # a barrier fault fires after the round's span
    reached = {"serial": {0: 30, 1: 30, 2: 30, 3: hung}, "threads": {3: hung}, "processes": {2: 30, 3: hung},
               "prange": dict.fromkeys(range(4), hung)}[backend]
    assert err.reached == reached and err.missing == sorted(reached)
    assert err.epoch == 30 and err.timeout == TIMEOUT
    assert f"3 (at epoch {hung})" in str(err) and f"for {TIMEOUT} s" in str(err)
    assert TIMEOUT <= seconds < TIMEOUT + PROMPT[backend]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_hang_in_the_sync_action_is_a_stall_too(backend):
    """Every instance arrived; the reduction itself hangs: nobody is behind, and it says so."""
    err, _ = fails(ff.SyncTimeout, backend, [Fault(1, 45, "reduction", "hang")], timeout=TIMEOUT)
    assert err.epoch == 50 and err.missing == [] and "every instance reached the sync at epoch 50" in str(err)


@pytest.mark.timeout(90)
def test_several_hanging_instances_are_listed():
    err, _ = fails(ff.SyncTimeout, "threads", [Fault(0, 5, "kernel", "hang"), Fault(3, 5, "kernel", "hang")],
                   timeout=TIMEOUT)
    # both workers hang; instances 1 and 2 are listed too unless they finished the round first
    assert {0, 3} <= set(err.missing) <= {0, 1, 2, 3} and err.missing == sorted(err.missing)
    assert err.reached[0] == err.reached[3] == 5 and err.epoch == 10


# -- row 3: slow but under the timeout ---------------------------------------------------------

@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", PARALLEL)
def test_slow_under_timeout_gives_the_same_result(backend):
    res = train(backend, [Fault(1, 15, "kernel", "slow", seconds=0.3), Fault(2, 40, "barrier", "slow", seconds=0.3)],
                timeout=10.0)
    assert_identical(res, clean())


# -- rows 4-6: a worker process dies ------------------------------------------------------------

@pytest.mark.timeout(90)
@pytest.mark.parametrize("where,instance,epoch", [("kernel", 2, 33), ("sync", 1, 19)])
def test_worker_sigkilled_is_reported_with_the_signal(where, instance, epoch):
    """Row 4 (mid-epoch) and row 5 (inside the sync section): the connection's end-of-file tells,
    at once."""
    err, seconds = fails(ff.InstanceFailed, "processes", [Fault(instance, epoch, where, "kill")])
    assert (err.instance, err.epoch) == (instance, epoch)
    assert isinstance(err.__cause__, processes.WorkerDied)
    assert "SIGKILL" in str(err) and str(GROUPS[instance // 2]) in str(err)
    assert seconds < PROMPT["processes"]        # not the 60 s timeout


@pytest.mark.timeout(90)
@pytest.mark.parametrize("where,instance,epoch", [("kernel", 0, 12), ("sync", 3, 59)])
def test_worker_exiting_early_is_a_failure(where, instance, epoch):
    """Row 6: exit code 0 before completion -- also right after arriving at the last sync."""
    err, _ = fails(ff.InstanceFailed, "processes", [Fault(instance, epoch, where, "exit")])
    assert err.instance == instance and "exited with code 0 before completion" in str(err)


# -- rows 7, 8 and 26: the parent is killed; Ctrl-C in the middle of a long round -----------------

# One sync round of about a minute (2 instances x 1000 epochs of ~0.05 s on 50,000 samples); a
# mark on stdout says the run is inside it (instance 0, epoch 2).
SCRIPT = textwrap.dedent("""
    import signal, sys
    # a terminal's Ctrl-C, whatever the test runner inherited (a shell's background job ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import numpy as np
    import fastffnn as ff
    from fastffnn._faults import Fault, inject
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50_000, 30)); y = (X[:, 0] > 0).astype(int)
    with inject(Fault(0, 2, "kernel", "mark")):
        ff.train(X, y, hidden=(64, 64), instances=2, epochs=1000, sync="average", sync_every=1000,
                 workers=2, timeout=60.0, backend=sys.argv[1])
""")
ROUND_S = 50.0      # what the round would take: several times every bound asserted below


def start_script(backend):
    """The script in a new session (so a Ctrl-C reaches its whole process group, as a terminal's
    does); returns (Popen, pid) once it is inside its long round."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, backend], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline()
    if not line.startswith("MARK"):
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"the script did not start its run: {line!r}\n{stderr}")
    return proc, proc.pid


def wait_gone(pids, seconds=10.0) -> set:
    """Poll until ``pids`` have exited (or become zombies of a reaper); returns those still running."""
    deadline = time.monotonic() + seconds
    while any(pid_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {p for p in pids if pid_running(p)}


@pytest.mark.timeout(120)
def test_parent_sigkilled_workers_exit_and_segments_are_swept():
    """Row 7: workers notice the parent's death (in the middle of their kernels) and exit; the
    stale segments are swept by the next run."""
    proc, pid = start_script("processes")
    try:
        workers = child_pids(pid)
        assert len(workers) >= 2 and shm_segments(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not wait_gone(workers), "workers outlived their parent"
    stale = shm_segments(pid)
    swept = processes.sweep_stale_segments()
    assert set(swept) >= stale and not shm_segments(pid)
    assert_identical(train("threads"), clean())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ALL)
def test_ctrl_c_cancels_everything(backend):
    """Rows 8 and 26: SIGINT to the process group in the middle of a round of about a minute:
    every kernel stops within a step, KeyboardInterrupt, nothing left behind -- in well under
    the round's time (5 s covers the interpreter's exit and the pool's)."""
    proc, pid = start_script(backend)
    children = child_pids(pid)
    t = time.monotonic()
    os.killpg(pid, signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=ROUND_S)
    except subprocess.TimeoutExpired:
        os.killpg(pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("Ctrl-C did not end the run")
    assert time.monotonic() - t < 5.0
    assert "KeyboardInterrupt" in stderr
    assert proc.returncode in (-signal.SIGINT, 1, 130)
    assert "resource_tracker" not in stderr and "leaked" not in stderr, stderr
    assert not shm_segments(pid)
    assert not wait_gone(children), "child processes outlived the run"


# -- row 9: the reduction raises -----------------------------------------------------------------

@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ALL)
def test_reduction_raises_and_nothing_is_half_averaged(backend):
    """The barrier breaks for all; every instance keeps exactly its weights from before the
    failed sync: the round's span ran, the averaging did not."""
    live = {}
    err, _ = fails(ff.InstanceFailed, backend, [Fault(2, 25, "reduction", "raise")],
                   callback=snapshot_params(live))
    assert (err.instance, err.epoch) == (2, 25) and isinstance(err.__cause__, InjectedFault)
    left = np.array(live.pop("params"))
    # the clean run to epoch 30 did the same spans and then averaged the last layer
    ref = clean(epochs=30).ensemble.params
    cols = sync_columns(clean(epochs=30).ensemble.topology, "last")
    rest = np.ones(left.shape[1], bool)
    rest[cols] = False
    assert (left[:, rest] == ref[:, rest]).all()
    assert (combine(left[:, cols], np.full(N, 1.0 / N)) == ref[0, cols]).all()
    for k in range(N):
        assert not (left[k, cols] == ref[0, cols]).all(), f"instance {k} has averaged weights"


# -- rows 10 and 11: NaN and Inf ------------------------------------------------------------------

@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ALL)
def test_nan_is_caught_before_averaging(backend):
    live = {}
    err, _ = fails(ff.NonFiniteError, backend, [Fault(3, 37, "kernel", "nan")], sync_layers="all",
                   callback=snapshot_params(live))
    assert (err.instance, err.epoch) == (3, 37)
    left = np.array(live.pop("params"))
    assert not np.isfinite(left[3]).all()
    assert np.isfinite(left[[0, 1, 2]]).all(), "NaN reached another instance"


def test_fastmath_flags_keep_nan_checks():
    assert not {"nnan", "ninf", "fast"} & set(kernel_config.FASTMATH)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_nonfinite_weight_is_caught_with_the_fastmath_kernel(bad, activation):
    """Row 11: a NaN weight planted at the sync of epoch 20 shows in the numba (fastmath) kernel's
    loss of epoch 20 itself -- the loss check finds it, so no flag let LLVM drop the NaN (as
    ``nnan`` would fold ``0 * z`` in ReLU).  An Inf may saturate (tanh) and leave the loss finite;
    the weight check after the span still finds it."""
    def plant(point):
        if point.epoch == 20:
            point._ctx.params[1, 0] = bad
    err, _ = fails(ff.NonFiniteError, "threads", kernel="numba", activation=activation, sync="none",
                   callback=plant)
    assert err.instance == 1
    if np.isnan(bad):
        assert err.epoch == 20
    else:
        assert 20 <= err.epoch < 30


# -- row 12: prange from two threads on the workqueue layer ----------------------------------------

PRANGE_TWICE = textwrap.dedent("""
    import threading
    import numpy as np
    import numba
    import fastffnn as ff
    from fastffnn._faults import Fault, inject
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)); y = (X[:, 0] > 0).astype(int)
    inside, errors, results = threading.Event(), [], []
    def run(first):
        try:
            results.append(ff.train(X, y, hidden=(4,), instances=2, epochs=20, sync_every=10,
                                    backend="prange", callback=(lambda p: inside.set()) if first else None))
        except RuntimeError as exc:
            errors.append(str(exc))
    with inject(Fault(0, 15, "kernel", "slow", seconds=3.0)):
        first = threading.Thread(target=run, args=(True,))
        first.start()
        assert inside.wait(120)
        second = threading.Thread(target=run, args=(False,))
        second.start()
        second.join()
        first.join()
    print("LAYER", numba.threading_layer())
    print("RESULTS", len(results))
    for e in errors:
        print("ERROR", e)
""")


@pytest.mark.timeout(180)
def test_prange_twice_on_workqueue_is_refused_not_aborted():
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    out = subprocess.run([sys.executable, "-c", PRANGE_TWICE], env=env, capture_output=True, text=True,
                         timeout=170)
    assert out.returncode == 0, out.stderr
    assert "LAYER workqueue" in out.stdout and "RESULTS 1" in out.stdout
    errors = [line for line in out.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "'workqueue' threading layer" in errors[0] and "prange" in errors[0]


# -- row 14: N = 1 works; bad arguments are refused before anything starts ------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ALL)
def test_single_instance(backend):
    assert_identical(train(backend, instances=1), clean(instances=1))


BAD = [dict(instances=0), dict(instances=-1), dict(hyperparams=[], instances=None), dict(sync_every=0),
       dict(sync_every=-5), dict(timeout=0), dict(timeout=-1.0), dict(timeout=float("nan")), dict(epochs=0)]


@pytest.mark.parametrize("backend", ALL)
def test_bad_arguments_refused_before_start(backend, monkeypatch):
    def must_not_start(name):
        raise AssertionError("a backend was started")
    monkeypatch.setattr(ff.api, "get_backend", must_not_start)
    for bad in BAD:
        with pytest.raises(ValueError):
            train(backend, **bad)


# -- row 23: /dev/shm too small --------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_shm_full_is_a_clear_error_and_unlinks_what_was_made(monkeypatch):
    specs, calls = {}, []
    real_allocate, real_fallocate = processes.ProcessesBackend.allocate, os.posix_fallocate

    def allocate(self, array_specs):
        specs.update(array_specs)
        return real_allocate(self, array_specs)

    def fallocate(fd, offset, length):
        calls.append(length)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fallocate(fd, offset, length)

    monkeypatch.setattr(processes.ProcessesBackend, "allocate", allocate)
    monkeypatch.setattr(processes.os, "posix_fallocate", fallocate)
    with pytest.raises(MemoryError) as info:
        train("processes")
    needed = sum(max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize) for shape, dtype in specs.values())
    message = str(info.value)
    assert f"needs {needed} bytes" in message and "/dev/shm" in message and str(calls[2]) in message
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert len(calls) == 3 and not shm_segments()


# -- row 24: an exception that cannot be pickled --------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ("threads", "processes"))
def test_unpicklable_failure_is_still_reported(backend):
    err, _ = fails(ff.InstanceFailed, backend, [Fault(1, 14, "kernel", "unpicklable")])
    assert (err.instance, err.epoch) == (1, 14)
    if backend == "processes":          # crossed as text: the traceback, instance and epoch
        assert isinstance(err.cause, str)
        assert "Traceback" in err.cause and "_Unpicklable: unpicklable failure at epoch 14" in err.cause
        assert "instance 1 failed in epoch 14" in str(err)
    else:
        assert type(err.__cause__).__name__ == "_Unpicklable"


# -- row 25: a corrupted Numba cache --------------------------------------------------------------

CACHE_RUN = textwrap.dedent("""
    import os, shutil, sys, warnings
    import numpy as np
    import fastffnn as ff
    from fastffnn.kernels import span
    if sys.argv[1] == "seed":       # start from the package's own cache where it is current
        src = os.path.join(os.path.dirname(span.__file__), "__pycache__")
        dst = span.train_span._cache._cache_path
        os.makedirs(dst, exist_ok=True)
        for name in os.listdir(src) if os.path.isdir(src) else ():
            if name.endswith((".nbi", ".nbc")):
                shutil.copy2(os.path.join(src, name), dst)
        print("CACHE", dst)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)); y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ff.train(X, y, hidden=(4,), instances=2, epochs=5, sync_every=5, sync="average",
                       backend="serial")
    print("RESULT", res.ensemble.params.tobytes().hex())
    print("WARNED", any("Numba cache" in str(w.message) for w in caught))
""")


@pytest.mark.timeout(300)
def test_corrupted_numba_cache_recompiles(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}

    def run(mode):
        out = subprocess.run([sys.executable, "-c", CACHE_RUN, mode], env=env, capture_output=True, text=True,
                             timeout=280)
        assert out.returncode == 0, out.stderr[-3000:]
        return dict(line.split(" ", 1) for line in out.stdout.splitlines())

    first = run("seed")
    cache = first["CACHE"]
    files = os.listdir(cache)

    def cached(prefix, ext):
        found = [os.path.join(cache, f) for f in files if f.startswith(prefix) and f.endswith(ext)]
        assert found, (prefix, ext, files)
        return found

    # cheap kernels to recompile, all loaded while warming up: an index cut short, a data file
    # overwritten with garbage, an index with a stretch of flipped bytes
    for path in cached("reduce.combine_rows-", ".nbi"):
        os.truncate(path, 10)
    for path in cached("span.workspace_size_jit-", ".nbc"):
        with open(path, "wb") as f:
            f.write(os.urandom(200))
    for path in cached("span._predict_proba-", ".nbi"):
        with open(path, "r+b") as f:
            f.seek(20)
            f.write(b"\xff" * 8)
    second = run("reuse")
    assert second["RESULT"] == first["RESULT"]
    assert second["WARNED"] == "True"
    third = run("reuse")                        # the cache was rewritten: loads again, no warning
    assert third["RESULT"] == first["RESULT"] and third["WARNED"] == "False"
    shutil.rmtree(tmp_path / "numba", ignore_errors=True)


def test_kernel_cache_is_stamped_with_every_kernel_module():
    # a compiled kernel includes the helpers it calls and the constants it reads from other
    # modules, so its cache must go stale when any module of the package changes, not only its own
    from fastffnn.kernels import config, gemm, span
    directory = os.path.dirname(config.__file__)
    stamp = config.TolerantCache.STAMP
    assert {name for name, _, _ in stamp} == {f for f in os.listdir(directory) if f.endswith(".py")}
    for kernel in (span.train_span, gemm.gemm):
        assert kernel._cache._cache_file._source_stamp == stamp
