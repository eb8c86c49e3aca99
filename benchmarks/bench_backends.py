"""Backends: serial, threads, processes and prange at 1, 2, C, 2C and 3C instances, on seed and
seed-f32.  Processes run on their warm pool (the check run before timing starts it, as a
session's first run does); the share of wall time outside the workers' compute and barrier waits
-- handing the run to the workers and collecting it -- is recorded beside it as ``overhead_s``."""
import pytest

from .common import CORES, INSTANCES, busy_seconds, describe, time_train, worker_groups, workload

BACKENDS = ("serial", "threads", "processes", "prange")


def _cases():
    for name in ("seed", "seed-f32"):
        for backend in BACKENDS:
            for instances in INSTANCES:
                yield pytest.param(name, backend, instances, id=f"{name}-{backend}-instances-{instances}")


@pytest.mark.parametrize("name, backend, instances", list(_cases()))
def test_backend(benchmark, timed, roofline, name, backend, instances):
    wl = workload(name, timed)
    workers = 1 if backend == "serial" else min(CORES, instances)      # prange: Numba's thread pool
    describe(benchmark, wl, roofline, timed, area="backends", backend=backend, kernel="numba",
             instances=instances, workers=workers)
    result = time_train(benchmark, wl, timed, instances=instances, backend=backend)
    if backend == "processes":
        busy = busy_seconds(result, worker_groups(instances, workers))
        benchmark.extra_info["overhead_s"] = result.timing.wall - busy
