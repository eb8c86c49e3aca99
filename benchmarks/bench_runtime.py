"""The runtime (PERFORMANCE.md): the processes backend on its warm pool -- a short run's latency
and a long run's throughput beside threads -- and how fast every backend stops once another
instance fails in the middle of a long round."""
import time
from dataclasses import replace

import numpy as np
import pytest

import fastffnn as ff
from fastffnn._faults import Fault, inject

from .common import CORES, PEER_INSTANCES, _synthetic, describe, time_train, workload

LONG_EPOCHS = 2000


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_short_run(benchmark, timed, backend):
    """A 1-epoch run of 8 instances on the seed workload: the cost of using a backend at all.
    The check run before timing starts the processes backend's pool, as a session's first run does."""
    wl = workload("seed", timed)
    benchmark.group = "runtime-short"
    benchmark.extra_info.update(kind="latency", label=f"{backend}, 1-epoch run, N = {PEER_INSTANCES}",
                                backend=backend, instances=PEER_INSTANCES)
    wl.train(1, instances=PEER_INSTANCES, backend=backend)
    benchmark(lambda: wl.train(1, instances=PEER_INSTANCES, backend=backend))


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_long_run(benchmark, timed, roofline, backend):
    """N = 8 x 2000 epochs of seed: processes against threads in the same run."""
    wl = replace(workload("seed", timed), epochs=LONG_EPOCHS)
    describe(benchmark, wl, roofline, timed, area="runtime", backend=backend, kernel="numba",
             instances=PEER_INSTANCES, workers=CORES)
    time_train(benchmark, wl, timed, rounds=3 if timed else None, instances=PEER_INSTANCES, backend=backend)


# a round that would take tens of seconds: 2 instances x 2000 epochs of ~10 ms
STOP_X, STOP_Y = _synthetic(20_000, 30, seed=1)


@pytest.mark.parametrize("backend", ["serial", "threads", "processes", "prange"])
def test_stop_latency(benchmark, timed, backend):
    """Seconds from an injected failure (instance 1 at epoch 3; serial: instance 0, since it runs
    the instances in turn) to ``train`` raising, while the other instance is in the middle of a
    long round: the cancel flag stops its kernel within a step."""
    culprit = 0 if backend == "serial" else 1
    latencies = []

    def run():
        with inject(Fault(culprit, 3, "kernel", "raise")), pytest.raises(ff.InstanceFailed) as info:
            ff.train(STOP_X, STOP_Y, hidden=(64, 64), instances=2, epochs=2000, sync_every=2000, workers=2,
                     backend=backend, timeout=60.0)
        latencies.append(time.monotonic() - info.value.cause.raised_at)

    run()       # compiles, starts the pool
    latencies.clear()
    benchmark.group = "runtime-stop"
    benchmark.extra_info.update(kind="latency", label=f"{backend}: a failure to the run raising",
                                backend=backend, instances=2)
    benchmark.pedantic(run, rounds=5 if timed else 1, iterations=1, warmup_rounds=0)
    benchmark.extra_info["latency_s"] = float(np.median(latencies))
    assert benchmark.extra_info["latency_s"] < 5.0, "the other instance ran on"
