"""The runtime (DESIGN.md B2, RELIABILITY.md rows 3 and 26-29): cancellation within a step,
``timeout`` as a stall watchdog, the processes backend's warm pool and its workers that never
re-run the user's main module; and the layering (no import cycle).

Ctrl-C in the middle of a long round (row 26) is ``test_faults.test_ctrl_c_cancels_everything``."""
from __future__ import annotations

import ast
import os
import pkgutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import fastffnn as ff
from fastffnn import kernels
from fastffnn._faults import Fault, inject
from fastffnn.backends import processes
from fastffnn.kernels import config, numpy_span, span
from naive import make_data

from residue import child_pids, pid_running, shm_segments

pytestmark = [pytest.mark.filterwarnings("error::ResourceWarning"), pytest.mark.timeout(120)]

ALL = ("serial", "threads", "processes", "prange")
X, Y = make_data()


def bits(res) -> bytes:
    return res.ensemble.params.tobytes() + res.history.losses.tobytes() + res.history.global_loss.tobytes()


# -- the kernels: a cancelled span stops within a step, having done whole epochs only ------------

class Span:
    """One instance's span on a seeded problem big enough that a few hundred epochs take seconds."""

    def __init__(self, batch_size=None, n=4000, features=20, sizes=(20, 64, 64, 1)):
        rng = np.random.default_rng(7)
        self.X = rng.normal(size=(n, features))
        self.T = (self.X[:, :1] > 0).astype(np.float64)
        self.sizes = np.array(sizes, dtype=np.int64)
        P = kernels.n_params(sizes)
        self.params0 = rng.normal(scale=0.3, size=P)
        self.hyper = ff.HyperParams(lr=0.05, batch_size=batch_size).row(n)
        self.batch = int(self.hyper[config.BATCH_SIZE])

    def run(self, epochs, kernel=span.train_span, cancel=None, started=None):
        """(params, moments, losses, done) after ``epochs`` epochs or a cancel; ``started`` is
        set once the first epoch has completed (``done`` > 0)."""
        params, moments = self.params0.copy(), np.zeros((2, self.params0.shape[0]))
        rng, order = np.array([12345], np.uint64), np.arange(self.X.shape[0])
        losses = np.full(epochs, np.nan)
        work = np.zeros(kernels.workspace_size(self.sizes, self.batch))
        grad = np.zeros_like(params)
        cancel = np.zeros(1, np.int64) if cancel is None else cancel
        done = np.zeros(1, np.int64)
        if started is not None:
            threading.Thread(target=lambda: (_poll(lambda: done[0] > 0), started.set()), daemon=True).start()
        kernel(params, moments, np.zeros(1, np.int64), rng, losses, self.X, self.T, self.sizes, config.RELU,
               self.hyper, work, grad, order, cancel, done, bool(self.sizes[-1] == 1))
        return params, moments, losses, int(done[0])


def _poll(predicate, timeout=60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


KERNELS = [span.train_span, numpy_span.train_span]


@pytest.mark.parametrize("kernel", KERNELS, ids=["numba", "numpy"])
def test_a_span_cancelled_before_it_starts_changes_nothing(kernel):
    problem = Span()
    params, moments, losses, done = problem.run(5, kernel, cancel=np.ones(1, np.int64))
    assert done == 0 and np.isnan(losses).all()
    assert (params == problem.params0).all() and (moments == 0).all()


@pytest.mark.parametrize("batch_size", [None, 64], ids=["full-batch", "mini-batch"])
@pytest.mark.parametrize("kernel", KERNELS, ids=["numba", "numpy"])
def test_a_span_cancelled_midway_stops_within_a_step(kernel, batch_size):
    """Cancelled from another thread while it runs, the span returns long before its end; its
    first ``done`` epochs are those of an uncancelled span, and a step cut short is not applied
    (with the full batch, one step an epoch, the instance is left exactly at epoch ``done``;
    with mini-batches, also the steps of the next epoch that completed before the cancel)."""
    problem = Span(batch_size)
    cancel, started = np.zeros(1, np.int64), threading.Event()
    timer = threading.Thread(target=lambda: (started.wait(60), cancel.__setitem__(0, 1)))
    timer.start()
    t = time.monotonic()
    params, moments, losses, done = problem.run(100_000, kernel, cancel, started)
    timer.join()
    assert time.monotonic() - t < 30, "the span ran on after the cancel"
    assert 0 < done < 100_000 and np.isnan(losses[done:]).all()
    ref_params, ref_moments, ref_losses, ref_done = problem.run(done, kernel)
    assert ref_done == done and losses[:done].tobytes() == ref_losses.tobytes()
    if batch_size is None:
        assert params.tobytes() == ref_params.tobytes() and moments.tobytes() == ref_moments.tobytes()


# -- the watchdog: a long healthy round never fails; a stall does (test_faults: every backend) ----

LONG = dict(hidden=(64, 64), instances=2, epochs=80, sync="average", sync_every=80, workers=2, seed=1)
X_LONG, Y_LONG = make_data(20_000, 20, seed=2)      # 7-30 ms an epoch: one round takes seconds


@pytest.mark.parametrize("backend,kernel", [(b, "numba") for b in ALL] + [("threads", "numba-gil"),
                                                                          ("threads", "numpy")])
def test_a_round_far_longer_than_timeout_succeeds(backend, kernel):
    """Row 3: one sync round several times ``timeout`` long keeps progressing, so it never
    fails, and equals the run without a watchdog."""
    timeout = 0.2 if kernel == "numba" else 0.5     # several epochs of the slower kernels
    options = dict(LONG)
    while (ref := ff.train(X_LONG, Y_LONG, backend=backend, kernel=kernel, timeout=None, **options)).timing.wall \
            < 6 * timeout:                          # a faster machine gets a longer round
        options.update(epochs=2 * options["epochs"], sync_every=2 * options["epochs"])
    res = ff.train(X_LONG, Y_LONG, backend=backend, kernel=kernel, timeout=timeout, **options)
    assert bits(res) == bits(ref)


@pytest.mark.parametrize("backend", ["serial", "threads", "processes"])
def test_a_failure_stops_the_others_within_a_step(backend):
    """A failure cancels every other instance's span where it is: here one instance raises while
    the other has most of a minute-long round to go (serial runs them in turn, so there the first
    one fails and the second never starts)."""
    options = dict(LONG, epochs=2000, sync_every=2000)
    culprit = 0 if backend == "serial" else 1
    t = time.monotonic()
    with inject(Fault(culprit, 3, "kernel", "raise")), pytest.raises(ff.InstanceFailed) as info:
        ff.train(X_LONG, Y_LONG, backend=backend, timeout=60.0, **options)
    assert (info.value.instance, info.value.epoch) == (culprit, 3)
    assert time.monotonic() - t < 10, "the other instance ran on"


# -- processes: never the user's main module; a warm pool ---------------------------------------

GUARDLESS = textwrap.dedent("""
    print("SCRIPT RAN", flush=True)
    import numpy as np
    import fastffnn as ff
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)); y = (X[:, 0] > 0).astype(int)
    options = dict(hidden=(8,), instances=4, epochs=30, sync="average", sync_every=10, workers=2)
    a = ff.train(X, y, backend="processes", **options)
    b = ff.train(X, y, backend="serial", **options)
    print("IDENTICAL", a.ensemble.params.tobytes() == b.ensemble.params.tobytes(), flush=True)
""")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["script", "stdin", "-c"])
def test_processes_without_the_main_guard(how, tmp_path):
    """Row 27: a script without ``if __name__ == "__main__":``, ``python -`` and ``python -c``:
    the workers never re-run it (it prints once), and the results equal serial's."""
    script = tmp_path / "guardless.py"
    script.write_text(GUARDLESS)
    args = {"script": [str(script)], "stdin": ["-"], "-c": ["-c", GUARDLESS]}[how]
    out = subprocess.run([sys.executable, *args], input=GUARDLESS if how == "stdin" else None,
                         capture_output=True, text=True, timeout=170, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("SCRIPT RAN") == 1 and "IDENTICAL True" in out.stdout, out.stdout


def test_a_worker_that_fails_to_import_reports_its_traceback(tmp_path, monkeypatch):
    """Row 28: the worker's own traceback, not just an exit code; the next run is fine."""
    (tmp_path / "threadpoolctl.py").write_text('raise ImportError("threadpoolctl broken on purpose")\n')
    with monkeypatch.context() as patch:
        patch.syspath_prepend(str(tmp_path))        # the workers get this path; this process has the module
        with pytest.raises(ff.InstanceFailed) as info:
            ff.train(X, Y, hidden=(8,), instances=2, epochs=10, workers=2, backend="processes")
    err = info.value
    assert err.instance in (0, 1) and err.epoch == 0
    assert isinstance(err.__cause__, processes.WorkerStartFailed)
    text = str(err)
    assert "Traceback" in text and "threadpoolctl broken on purpose" in text and "failed to start" in text
    assert not processes._POOL.idle, "a worker that failed to start stays out of the pool"
    ff.train(X, Y, hidden=(8,), instances=2, epochs=10, workers=2, backend="processes")


def pool_pids() -> list:
    return sorted(w.pid for w in processes._POOL.idle)


def test_the_pool_outlives_a_run_grows_replaces_and_shuts_down():
    """Row 29 and the warm pool: two runs reuse the workers (same pids), a bigger run grows the
    pool, a failed run leaves it usable, a worker SIGKILLed between runs is replaced, and after
    ``shutdown()`` no child process or segment remains."""
    before = child_pids()
    options = dict(hidden=(8,), instances=4, epochs=20, sync="average", sync_every=10, seed=4)
    ref = ff.train(X, Y, backend="serial", workers=2, **options)

    first = ff.train(X, Y, backend="processes", workers=1, **options)
    one = pool_pids()
    assert len(one) == 1 and bits(first) == bits(ref)
    assert bits(ff.train(X, Y, backend="processes", workers=2, **options)) == bits(ref)
    two = pool_pids()
    assert len(two) == 2 and set(one) < set(two), "the pool grows and keeps its worker"
    assert bits(ff.train(X, Y, backend="processes", workers=2, **options)) == bits(ref)
    assert pool_pids() == two, "a second run reuses the workers"

    with inject(Fault(1, 12, "kernel", "raise")), pytest.raises(ff.InstanceFailed):
        ff.train(X, Y, backend="processes", workers=2, **options)
    assert pool_pids() == two, "workers that reported their end are kept after a failed run"

    victim = two[0]
    os.kill(victim, signal.SIGKILL)
    assert _poll(lambda: not pid_running(victim), 10), "the killed worker did not die"
    assert bits(ff.train(X, Y, backend="processes", workers=2, **options)) == bits(ref)
    now = pool_pids()
    assert len(now) == 2 and victim not in now and two[1] in now

    ff.shutdown()
    assert not processes._POOL.idle
    assert child_pids() - before == set() and not shm_segments()


def test_a_hung_worker_is_killed_and_replaced_after_the_stall():
    """A worker stuck outside the kernels (where the cancel flag cannot reach it) is killed once
    it fails to report within the drain time, and a fresh one takes its place next run."""
    options = dict(hidden=(8,), instances=2, epochs=20, sync_every=10, workers=2, backend="processes")
    ff.train(X, Y, **options)
    before = pool_pids()
    with inject(Fault(1, 5, "kernel", "stuck", seconds=600)), pytest.raises(ff.SyncTimeout) as info:
        ff.train(X, Y, timeout=0.5, **options)
    assert info.value.reached == {1: 5}
    after = pool_pids()
    assert len(after) == 1 and after[0] in before, "the hung worker was not discarded"
    ff.train(X, Y, **options)
    assert len(pool_pids()) == 2


# -- the Ray backend without Ray ---------------------------------------------------------------

def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)       # `import ray` now fails, as where it is absent
    with pytest.raises(ImportError, match=r"fastffnn\[ray\]"):
        ff.train(X, Y, hidden=(8,), instances=2, epochs=2, backend="ray", workers=1)


# -- layering: no import cycle ----------------------------------------------------------------

def _module_imports(package_dir: Path, package: str) -> dict:
    """Module name -> the package's modules it imports at module level (not inside functions)."""
    graph = {}
    for info in pkgutil.walk_packages([str(package_dir)], prefix=f"{package}."):
        path = Path(info.module_finder.path) / (info.name.rsplit(".", 1)[1] + ("/__init__.py" if info.ispkg else ".py"))
        tree = ast.parse(path.read_text())
        here = info.name if info.ispkg else info.name.rsplit(".", 1)[0]
        deps = set()
        for node in tree.body:          # module level only: a function's import runs on call
            if isinstance(node, ast.ImportFrom):
                base = here
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                target = node.module if node.level == 0 else (f"{base}.{node.module}" if node.module else base)
                if target.startswith(package):
                    deps.add(target)
                    deps.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith(package))
        graph[info.name] = deps
    return {name: {d for d in deps if d in graph and d != name} for name, deps in graph.items()}


def test_no_import_cycle():
    """The layers (api -> driver -> kernels; backends -> driver) import one way only."""
    import fastffnn
    graph = _module_imports(Path(fastffnn.__file__).parent, "fastffnn")
    assert {"fastffnn.api", "fastffnn.driver", "fastffnn.backends.processes"} <= set(graph)
    # a package's __init__ importing its own submodules is not a cycle of the layers
    graph = {name: {d for d in deps if not name.startswith(d + ".")} for name, deps in graph.items()}
    state: dict = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert "fastffnn.backends" not in {d.rsplit(".", 1)[0] for d in graph["fastffnn.driver"]}
