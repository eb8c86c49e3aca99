"""The GIL: the threads backend with the nogil Numba kernels, the same kernels holding the GIL, and
the report's numpy loop, at 1, 2, C, 2C and 3C instances (workers = min(C, N)).  Only the nogil
kernels should scale; the other two show what the 2020 report ran into (≈ 1x)."""
import pytest

from .common import CORES, INSTANCES, describe, time_train, workload


@pytest.mark.parametrize("instances", INSTANCES, ids=lambda n: f"instances-{n}")
@pytest.mark.parametrize("kernel", ["numba", "numba-gil", "numpy"])
def test_gil(benchmark, timed, roofline, kernel, instances):
    wl = workload("seed", timed)
    describe(benchmark, wl, roofline, timed, area="gil", backend="threads", kernel=kernel,
             instances=instances, workers=min(CORES, instances))
    time_train(benchmark, wl, timed, instances=instances, backend="threads", kernel=kernel)
