"""The first run on a fresh install (PERFORMANCE.md: ≤ 12 s per dtype): a tiny training run in a new
Python process with an empty Numba cache, so every kernel the run needs is compiled; the latency is
that run's ``train`` call, timed inside the process (the interpreter's start and the imports are
left out).  Timed runs only: each takes tens of seconds."""
import os
import subprocess
import sys

import pytest

# One tiny run of the threads backend: it compiles the span kernel, the native gemm and the
# reduction, all that a first `fastffnn.train` without validation data compiles (prediction
# compiles on first use); printing the seconds of the call alone.  `ff.train` is looked up before
# the clock starts: the lookup imports the API and scikit-learn, about 0.9 s that is no compiling.
COLD_RUN = """
import sys, time
import numpy as np
import fastffnn as ff
rng = np.random.default_rng(0)
X = rng.normal(size=(64, 30)); y = (X[:, 0] > 0).astype(int)
train = ff.train
t = time.perf_counter()
train(X, y, hidden=(32, 32), instances=2, epochs=2, dtype=sys.argv[1], backend="threads", seed=0)
print(time.perf_counter() - t)
"""


@pytest.mark.timed_only
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cold_compile(benchmark, tmp_path, dtype):
    seconds = []

    def run():
        cache = tmp_path / f"numba-{len(seconds)}"      # empty for every round
        out = subprocess.run([sys.executable, "-c", COLD_RUN, dtype], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "NUMBA_CACHE_DIR": str(cache)}, check=True)
        seconds.append(float(out.stdout.split()[-1]))

    benchmark.group = "compile-cold"
    benchmark.extra_info.update(kind="latency", label=f"first run, empty Numba cache, {dtype}, threads",
                                dtype=dtype)
    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info["latency_s"] = seconds[0]
