"""The harness itself: ``time_alternated`` on a clock and a pytest-benchmark stand-in of this file's
own, so that its pairing is checked in the plain run too (which times nothing)."""
from types import SimpleNamespace

import numpy as np

from . import common


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Benchmark:
    """pytest-benchmark's ``pedantic`` as ``time_alternated`` calls it, timing on ``clock``."""

    def __init__(self, clock):
        self.clock, self.extra_info = clock, dict(instances=8, epochs=10, flops_per_epoch=1,
                                                  roofline_instance_epochs_per_s=1.0)

    def pedantic(self, target, setup, rounds, iterations, warmup_rounds):
        assert iterations == 1 and warmup_rounds == 0
        data = []
        for _ in range(rounds):
            setup()
            start = self.clock()
            result = target()
            data.append(self.clock() - start)
        self.stats = SimpleNamespace(stats=SimpleNamespace(data=data, median=float(np.median(data))))
        return result


def test_time_alternated_pairs_each_round_and_divides_throughputs(monkeypatch):
    clock, calls = Clock(), []
    monkeypatch.setattr(common, "perf_counter", clock)

    def train(label, instances, seconds):
        # a run of `instances` x 10 epochs taking `seconds` on the clock; every run of the 3rd
        # round takes twice as long (a slow minute), which leaves each round's ratios as they are
        def call():
            clock.now += seconds * (2 if calls.count("run") == 2 else 1)
            calls.append(label)
            return SimpleNamespace(history=SimpleNamespace(losses=np.zeros((instances, 10))))
        return call

    bench = Benchmark(clock)
    others = {"one": train("one", 1, 1.0), "same": train("same", 8, 4.0)}
    common.time_alternated(bench, train("run", 8, 2.0), others, rounds=5)
    # each other once untimed, then one, same, run per round
    assert calls == ["one", "same"] + ["one", "same", "run"] * 5
    # run: 80 instance-epochs in 2 s; one: 10 in 1 s (4x); same: 80 in 4 s (2x)
    assert bench.extra_info["alternated"] == {"one": 4.0, "same": 2.0}
    assert bench.extra_info["instance_epochs_per_s"] == 40.0
