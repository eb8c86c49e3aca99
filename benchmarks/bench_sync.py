"""What syncing costs: threads backend, N = 8 instances, every strategy synced every 1, 10 and 100
epochs, against no sync at all: each synced row is timed round by round alternated with the
unsynced run, so the machine's drift from minute to minute leaves the ratio alone (the report
gives it; the "none" row is the same run timed on its own)."""
import pytest

from .common import CORES, PEER_INSTANCES, describe, time_train, workload

INSTANCES = PEER_INSTANCES      # PERFORMANCE.md: sync every 10 epochs costs <= 5 % at N = 8
ROUNDS = 15


def _cases():
    yield pytest.param("none", None, id="none")
    for strategy in ("average", "weighted", "best"):
        for every in (1, 10, 100):
            yield pytest.param(strategy, every, id=f"{strategy}-every-{every}")


@pytest.mark.parametrize("strategy, every", list(_cases()))
def test_sync(benchmark, timed, roofline, strategy, every):
    wl = workload("seed", timed)
    # "none" still meets at the barrier once, at the end; sync_every beyond the run means no round
    options = dict(sync=strategy, sync_every=every or wl.epochs)
    label = "none" if every is None else f"{strategy} every {every}"
    describe(benchmark, wl, roofline, timed, area="sync", backend="threads", kernel="numba",
             instances=INSTANCES, workers=min(CORES, INSTANCES), label=label, sync=strategy, sync_every=every)
    # averaging the output layers of differently started networks sets their learning back (the
    # report's case 1), so the check asks for finite losses and the serial backend's weights only
    plain = dict(instances=INSTANCES, backend="threads")
    unsynced = dict(plain, sync="none", sync_every=wl.epochs)      # the "none" row's run
    others = None if every is None else {"sync none": lambda: wl.train(wl.epochs, **unsynced)}
    time_train(benchmark, wl, timed, None if every is None else ROUNDS, learns=strategy == "none", others=others,
               **plain, **options)
