"""Backends: serial, threads, processes and prange at 1, 2, C, 2C and 3C instances, on seed and
seed-f32.  Processes include their spawn cost (it is part of using them); the share of wall time
outside the workers' compute and barrier waits is recorded beside it as ``spawn_s``."""
import pytest

from .common import CORES, INSTANCES, busy_seconds, describe, time_train, worker_groups, workload

BACKENDS = ("serial", "threads", "processes", "prange")
PROCESS_ROUNDS = 3      # each call spawns the workers: a few single calls, not a calibrated loop


def _cases():
    for name in ("seed", "seed-f32"):
        for backend in BACKENDS:
            for instances in INSTANCES:
                # spawning is slow: the smoke run spawns processes once, seed at N = C
                slow = backend == "processes" and (name, instances) != ("seed", CORES)
                yield pytest.param(name, backend, instances, marks=pytest.mark.timed_only if slow else (),
                                   id=f"{name}-{backend}-instances-{instances}")


@pytest.mark.parametrize("name, backend, instances", list(_cases()))
def test_backend(benchmark, timed, roofline, name, backend, instances):
    wl = workload(name, timed)
    workers = 1 if backend == "serial" else min(CORES, instances)      # prange: Numba's thread pool
    describe(benchmark, wl, roofline, timed, area="backends", backend=backend, kernel="numba",
             instances=instances, workers=workers)
    result = time_train(benchmark, wl, timed, PROCESS_ROUNDS if backend == "processes" else None,
                        instances=instances, backend=backend)
    if backend == "processes":
        busy = busy_seconds(result, worker_groups(instances, workers))
        benchmark.extra_info["spawn_s"] = result.timing.wall - busy
