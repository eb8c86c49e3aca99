"""The Ray backend on a local Ray instance (skipped without Ray): throughput at N = 1, 2, C and 2C
on the seed workload over 2000 epochs -- each run starts its actors, which is part of using them --
a 1-epoch run's latency, and the cost of one sync round."""
import os
import time
from dataclasses import replace

import pytest

from .common import CORES, describe, time_train, workload

ray = pytest.importorskip("ray")

EPOCHS = 2000
ROUNDS = 200        # sync rounds of one epoch, for the cost of one round


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=CORES, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def _instances():
    for n in sorted({1, 2, CORES, 2 * CORES}):
        yield pytest.param(n, id=f"instances-{n}", marks=() if n == CORES else pytest.mark.timed_only)


@pytest.mark.parametrize("instances", list(_instances()))
def test_ray(benchmark, timed, roofline, instances):
    wl = replace(workload("seed", timed), epochs=EPOCHS)
    describe(benchmark, wl, roofline, timed, area="ray", backend="ray", kernel="numba", instances=instances,
             workers=min(CORES, instances))
    time_train(benchmark, wl, timed, rounds=3 if timed else None, instances=instances, backend="ray",
               workers=min(CORES, instances))


def test_ray_round(benchmark, timed):
    """One sync round (every actor's rows to the caller, the sync, the rows back): a run of
    1-epoch rounds against the same run with one round, per extra round; beside it, what a
    1-epoch run costs (starting the actors)."""
    wl = workload("seed", timed)
    rounds = ROUNDS if timed else 5
    options = dict(instances=CORES, backend="ray", workers=CORES, sync="average")

    def per_round():
        t = time.perf_counter()
        wl.train(rounds, sync_every=rounds, **options)
        one = time.perf_counter() - t
        t = time.perf_counter()
        wl.train(rounds, sync_every=1, **options)
        return (time.perf_counter() - t - one) / (rounds - 1)

    costs = []
    benchmark.group = "ray-round"
    benchmark.extra_info.update(kind="latency", label=f"ray: one sync round, N = {CORES}", backend="ray")
    benchmark.pedantic(lambda: costs.append(per_round()), rounds=3 if timed else 1, iterations=1)
    costs.sort()
    benchmark.extra_info["latency_s"] = costs[len(costs) // 2]
