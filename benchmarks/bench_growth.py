"""Growth: does throughput × work stay flat as the problem grows?  The threads backend on all cores
(N = C) over the seed workload, the n and width sweep, and ``wide`` (100 000 × 100, 100-256-128-1,
mini-batch 256).  Each sweep point trains about the FLOPs of a timed seed run; ``wide`` trains a few
epochs.  The report gives each its GFLOP/s and the ratio to seed's (PERFORMANCE.md: within 20 %)."""
import pytest

from .common import CORES, SWEEP, describe, time_train, workload

WIDE_ROUNDS = 3     # seconds per call: a few single calls, not a calibrated loop


@pytest.mark.parametrize("name", ["seed", *SWEEP, "wide"])
def test_growth(benchmark, timed, roofline, name):
    wl = workload(name, timed)
    describe(benchmark, wl, roofline, timed, area="growth", backend="threads", kernel="numba",
             instances=CORES, workers=CORES)
    # the threads backend's weights equal the serial backend's: bench_backends checks that on seed
    time_train(benchmark, wl, timed, WIDE_ROUNDS if name == "wide" else None, compare=False,
               instances=CORES, backend="threads")
