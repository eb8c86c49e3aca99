"""The GIL: the threads backend with the nogil Numba kernels, the same kernels holding the GIL, and
the report's numpy loop, at 1, 2, C, 2C and 3C instances (workers = min(C, N)).  Only the nogil
kernels should scale; the other two show what the 2020 report ran into (≈ 1x).  Each row at N > 1
is timed round by round alternated with the same kernel at N = 1, so its speedup over one instance
is paired by round, out of the machine's drift from minute to minute (the report gives it)."""
import pytest

from .common import CORES, INSTANCES, describe, time_train, workload

ROUNDS = 15


@pytest.mark.parametrize("instances", INSTANCES, ids=lambda n: f"instances-{n}")
@pytest.mark.parametrize("kernel", ["numba", "numba-gil", "numpy"])
def test_gil(benchmark, timed, roofline, kernel, instances):
    wl = workload("seed", timed)
    describe(benchmark, wl, roofline, timed, area="gil", backend="threads", kernel=kernel,
             instances=instances, workers=min(CORES, instances))
    one = {f"threads/{kernel}, N = 1": lambda: wl.train(wl.epochs, instances=1, backend="threads", kernel=kernel)}
    time_train(benchmark, wl, timed, None if instances == 1 else ROUNDS, others=None if instances == 1 else one,
               instances=instances, backend="threads", kernel=kernel)
