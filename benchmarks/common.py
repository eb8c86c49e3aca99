"""Seeded workloads, FLOPs per epoch, the gemm roofline of each dtype and the check-then-time helpers that every
benchmark file shares (PERFORMANCE.md).

One code path, two modes.  Plain ``pytest`` (pyproject's addopts say ``--benchmark-disable``) runs
each benchmark once on a few epochs: a smoke test of every configuration.  ``pytest benchmarks
--benchmark-only`` times them on the epochs below, and ``benchmarks/conftest.py`` prints the scaling
report (``fastffnn.reports.scaling``) at the end.

Every benchmark first runs its configuration for a few check epochs and asserts the result (finite
losses, accuracy, the serial backend's weights); that run also compiles the kernels (``cache=True``),
so compile time stays out of the timed call.  In the smoke run the check is the one call.  Settings
and derived figures go into ``benchmark.extra_info``; ``fastffnn.reports.scaling`` recomputes the
derived ones, and the speedups, from the saved JSON.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from time import perf_counter

import numpy as np
from sklearn.datasets import make_classification
from threadpoolctl import threadpool_limits

import fastffnn as ff
from fastffnn.reports import scaling
from fastffnn.backends.base import cpu_count

CORES = cpu_count()
INSTANCES = tuple(sorted({1, 2, CORES, 2 * CORES, 3 * CORES}))
PEER_INSTANCES = 8          # PERFORMANCE.md's targets are quoted at N = 8
CHECK_EPOCHS = 10           # the correctness run before timing: seed reaches accuracy > 0.9 by then
LR = 0.1                    # plain gradient descent (momentum 0) for fastffnn and every peer alike
SEED_WORK = 200 * 5_210_112     # FLOPs one instance spends in a timed seed run; growth matches it


def flops_per_epoch(sizes: tuple, n: int) -> int:
    """Forward 2·n·Σ(fan_in·fan_out); backward twice that, less the first layer's input gradient,
    which is never computed.  Activations, loss and update are left out (they are O(n·width))."""
    forward = 2 * n * sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))
    return forward + 2 * forward - 2 * n * sizes[0] * sizes[1]


@dataclass(frozen=True)
class Workload:
    """A seeded dataset, a network and how long to train it (timed run; check and smoke run)."""

    name: str
    X: np.ndarray = field(repr=False, compare=False)
    y: np.ndarray = field(repr=False, compare=False)
    hidden: tuple
    dtype: str = "float64"
    batch_size: int | None = None
    epochs: int = 200                   # timed
    check_epochs: int = CHECK_EPOCHS
    min_accuracy: float | None = 0.9    # after check_epochs; None: the loss must fall instead

    @property
    def sizes(self) -> tuple:
        return (self.X.shape[1], *self.hidden, 1)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def flops_per_epoch(self) -> int:
        return flops_per_epoch(self.sizes, self.n)

    def epochs_for(self, timed: bool) -> int:
        return self.epochs if timed else self.check_epochs

    def hyperparams(self, optimizer: str = "sgd", momentum: float = 0.0) -> ff.HyperParams:
        return ff.HyperParams(lr=LR, momentum=momentum, batch_size=self.batch_size, optimizer=optimizer)

    def train(self, epochs: int, optimizer: str = "sgd", momentum: float = 0.0, **options) -> ff.TrainResult:
        """``fastffnn.train`` on this workload; ``options`` are instances, backend, kernel, sync..."""
        return ff.train(self.X, self.y, hidden=self.hidden, hyperparams=self.hyperparams(optimizer, momentum),
                        epochs=epochs, dtype=self.dtype, seed=0, **options)

    def settings(self, timed: bool) -> dict:
        return dict(workload=self.name, dtype=self.dtype, n_samples=self.n, sizes=list(self.sizes),
                    batch_size=self.batch_size or self.n, flops_per_epoch=self.flops_per_epoch,
                    epochs=self.epochs_for(timed))


def _synthetic(n: int, features: int, seed: int = 0) -> tuple:
    X, y = make_classification(n, features, random_state=seed)
    return ff.datasets.standardise(X)[0], y


SWEEP = ("sweep-n4096", "sweep-n32768", "sweep-w128", "sweep-w256")


@functools.lru_cache(maxsize=None)
def workload(name: str, timed: bool = True) -> Workload:
    """PERFORMANCE.md's ``seed``, ``seed-f32``, ``seed-mb32``, ``wide`` and ``wide-f32``, or a sweep
    point (``sweep-n<samples>``: seed's network on n synthetic samples; ``sweep-w<width>``: 512
    samples, two hidden layers of that width).  The smoke run of ``wide`` keeps its network but
    only 4096 of its 100 000 samples."""
    # X in the workload's dtype, as the peers get it: a float32 run then converts nothing
    dtype = "float32" if name.endswith("-f32") else "float64"
    if name in ("seed", "seed-f32", "seed-mb32"):
        X, _, y, _ = ff.datasets.breast_cancer(test_size=0.1, seed=0)       # 512 x 30
        return Workload(name, X.astype(dtype), y, (32, 32), dtype, batch_size=32 if name == "seed-mb32" else None)
    if name in ("wide", "wide-f32"):
        X, y = _synthetic(100_000 if timed else 4096, 100)
        return Workload(name, X.astype(dtype), y, (256, 128), dtype, batch_size=256, epochs=2, check_epochs=1,
                        min_accuracy=0.6)
    if name.startswith("sweep-n") or name.startswith("sweep-w"):
        value = int(name[len("sweep-n"):])
        n, width = (value, 32) if name[6] == "n" else (512, value)
        X, y = _synthetic(n, 30)
        epochs = max(1, round(SEED_WORK / flops_per_epoch((30, width, width, 1), n)))
        return Workload(name, X, y, (width, width), epochs=epochs, check_epochs=5,
                        min_accuracy=None)
    raise KeyError(f"unknown workload {name!r}")


@dataclass(frozen=True)
class Roofline:
    """cores × the best single-thread numpy gemm rate of each dtype (dgemm for float64, sgemm for
    float32), measured as a benchmark file starts (the report uses the best of the run)."""

    dgemm_gflops: float
    sgemm_gflops: float
    cores: int

    def gflops(self, dtype: str) -> float:
        return self.sgemm_gflops if dtype == "float32" else self.dgemm_gflops

    def instance_epochs_per_s(self, flops: int, dtype: str = "float64") -> float:
        return self.cores * self.gflops(dtype) * 1e9 / flops


def measure_roofline(timed: bool) -> Roofline:
    """Best of a few square shapes and repeats per dtype, BLAS pinned to one thread (a smoke run
    takes one)."""
    shapes, repeats = ((256, 512, 1024), 3) if timed else ((256,), 1)
    rng = np.random.default_rng(0)
    best = {np.float64: 0.0, np.float32: 0.0}
    with threadpool_limits(1):
        for dtype in best:
            for m in shapes:
                a, b = (rng.standard_normal((m, m)).astype(dtype) for _ in range(2))
                a @ b
                for _ in range(repeats):
                    t = perf_counter()
                    a @ b
                    best[dtype] = max(best[dtype], 2 * m ** 3 / (perf_counter() - t) / 1e9)
    return Roofline(best[np.float64], best[np.float32], CORES)


# --- check, then time ------------------------------------------------------------------------------

_REFERENCES: dict = {}


def serial_reference(wl: Workload, epochs: int, **options) -> np.ndarray:
    """(N, P) weights of the serial backend for the same run, computed once per session."""
    options = {k: v for k, v in options.items() if k not in ("backend", "workers")}
    key = (wl.name, epochs, tuple(sorted(options.items())))
    if key not in _REFERENCES:
        _REFERENCES[key] = wl.train(epochs, backend="serial", **options).ensemble.params
    return _REFERENCES[key]


def checked(wl: Workload, compare: bool = True, learns: bool = True, **options) -> ff.TrainResult:
    """Run the configuration for the workload's check epochs and assert it is right: finite losses,
    (``learns``) the workload's accuracy or a falling loss, and (``compare``) the serial backend's
    weights -- bit-identical for the Numba kernels, to rounding for ``kernel="numpy"`` (BLAS may sum
    in another order).  It also compiles the kernels, so the timed call that follows does not."""
    result = wl.train(wl.check_epochs, **options)
    check_result(wl, result.history.losses, result.ensemble.predict(wl.X) if learns else None)
    if compare and options.get("backend", "threads") != "serial":
        reference = serial_reference(wl, wl.check_epochs, **options)
        if options.get("kernel", "numba") == "numpy":
            np.testing.assert_allclose(result.ensemble.params, reference, rtol=1e-9, atol=1e-12)
        else:
            np.testing.assert_array_equal(result.ensemble.params, reference)
    return result


def check_result(wl: Workload, losses: np.ndarray, predicted: np.ndarray | None) -> None:
    """Finite losses (instances, epochs) and, unless ``predicted`` is None, the workload's accuracy
    or a falling loss."""
    assert np.isfinite(losses).all(), "non-finite training loss"
    if predicted is None:
        return
    if wl.min_accuracy is None:
        assert (losses[:, -1] < losses[:, 0]).all(), f"the loss did not fall: {losses[:, [0, -1]]}"
    else:
        accuracy = float(np.mean(predicted == wl.y))
        assert accuracy > wl.min_accuracy, f"training accuracy {accuracy:.3f} <= {wl.min_accuracy}"


def describe(benchmark, wl: Workload, roofline: Roofline, timed: bool, *, area: str, backend: str,
             instances: int, kernel: str | None = None, label: str | None = None, **settings) -> None:
    """Settings of a training benchmark, in ``extra_info`` (what ``fastffnn.reports.scaling`` reads); the
    label defaults to ``backend/kernel``."""
    benchmark.group = f"{area}-{wl.name}" if area != "growth" else "growth"
    label = label or (backend if kernel is None else f"{backend}/{kernel}")
    benchmark.extra_info.update(
        kind="train", area=area, backend=backend, kernel=kernel, instances=instances, label=label,
        cores=CORES, dgemm_gflops=roofline.dgemm_gflops, sgemm_gflops=roofline.sgemm_gflops,
        roofline_instance_epochs_per_s=roofline.instance_epochs_per_s(wl.flops_per_epoch, wl.dtype),
        **wl.settings(timed), **settings)


def check_then_time(benchmark, timed: bool, check, run, rounds: int | None = None, others: dict | None = None):
    """``check()`` (it asserts, and compiles what ``run`` will call), then time ``run()``
    (``time_call``, or ``time_alternated`` with ``others``); in the smoke run ``check`` is the one,
    untimed, call.  Returns what the last call returned."""
    if not timed:
        return benchmark(check)
    check()
    return time_call(benchmark, run, rounds) if others is None else time_alternated(benchmark, run, others, rounds)


def time_train(benchmark, wl: Workload, timed: bool, rounds: int | None = None, compare: bool = True,
               learns: bool = True, others: dict | None = None, **options) -> ff.TrainResult:
    """``check_then_time`` for ``fastffnn.train`` on ``wl`` with ``options`` (alternated with
    ``others``, label -> a call, when given)."""
    return check_then_time(benchmark, timed, lambda: checked(wl, compare, learns, **options),
                           lambda: wl.train(wl.epochs, **options), rounds, others)


def time_alternated(benchmark, run, others: dict, rounds: int):
    """Time ``rounds`` single calls of ``run``, each after one call of every run in ``others``
    (label -> a call), timed here: an A/B in the same minutes, as the machine's speed drifts.
    Every call is a ``fastffnn.train`` run (it returns a ``TrainResult``).
    ``extra_info["alternated"]`` maps each label to the median over rounds of ``run``'s throughput
    (instance-epochs per second) ÷ that run's in the same round (above 1: ``run`` is faster; for
    runs of the same work, the ratio of their times); ``fastffnn.reports.scaling`` notes it on the
    row.  Each of ``others`` is called once untimed first (it compiles what it needs)."""
    work = {label: _instance_epochs(other()) for label, other in others.items()}
    seconds = {label: [] for label in others}

    def before_round():
        for label, other in others.items():
            start = perf_counter()
            other()
            seconds[label].append(perf_counter() - start)

    result = benchmark.pedantic(run, setup=before_round, rounds=rounds, iterations=1, warmup_rounds=0)
    stats = _add_derived(benchmark)
    if stats is not None:
        own = _instance_epochs(result)
        benchmark.extra_info["alternated"] = {label: float(np.median(np.divide(times, stats.data))) * own / work[label]
                                              for label, times in seconds.items()}
    return result


def _instance_epochs(result: ff.TrainResult) -> int:
    return result.history.losses.size       # (instances, epochs)


def time_call(benchmark, target, rounds: int | None = None):
    """Time ``target()`` (pedantic with ``rounds`` single calls for the slow ones), then add the
    derived figures to ``extra_info``; returns what the last call returned."""
    if rounds is None:
        result = benchmark(target)
    else:
        result = benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=0)
    _add_derived(benchmark)
    return result


def _add_derived(benchmark):
    """The timed calls' statistics (None with --benchmark-disable: nothing was timed), and the
    figures derived from them added to ``extra_info``."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    benchmark.extra_info.update(scaling.derived(benchmark.extra_info, stats.stats.median))
    return stats.stats


def busy_seconds(result: ff.TrainResult, groups: list) -> float:
    """The longest a worker spent computing or waiting at the barrier; the rest of ``wall`` is
    handing the run to the workers and collecting it."""
    t = result.timing
    return max(float(t.compute[g].sum() + t.barrier_wait[g[0]]) for g in groups)


def worker_groups(instances: int, workers: int) -> list:
    return [list(g) for g in np.array_split(np.arange(instances), workers)]
