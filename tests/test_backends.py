"""Every backend returns bit-identical results; sync strategies and run-time hyperparameter
changes really change learning; the data is stored once (DESIGN.md, Backends and Sync).

Process runs start a worker pool (seconds; each test closes it), so each test below runs them once
or twice and shares them between assertions; the other backends run every combination."""
from __future__ import annotations

import itertools
import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest

import fastffnn as ff
from fastffnn import driver
from fastffnn.backends import threads
from fastffnn.sync import STRATEGIES, combine
from naive import make_data

from residue import SHM_DIR, shm_segments

pytestmark = [pytest.mark.filterwarnings("error::ResourceWarning"), pytest.mark.timeout(240)]

N, EPOCHS, EVERY = 4, 60, 10
IN_PROCESS = ("serial", "threads", "prange")


X, Y = make_data()
X_VAL, Y_VAL = make_data(40, seed=1)


def train(backend, sync="none", sync_layers="last", batch_size=None, dtype="float64", **kw):
    """One small run: 4 instances with different learning rates, 2 workers."""
    options = dict(hidden=(8, 8), hyperparams=ff.vary(lr=[0.02, 0.05, 0.1, 0.2], batch_size=batch_size),
                   epochs=EPOCHS, sync_every=EVERY, workers=2, timeout=60.0, seed=3,
                   validation=(X_VAL, Y_VAL))
    options.update(kw)
    return ff.train(X, Y, backend=backend, sync=sync, sync_layers=sync_layers, dtype=dtype, **options)


def bits(a) -> bytes:
    a = np.asarray(a)
    return a.dtype.str.encode() + str(a.shape).encode() + a.tobytes()


def assert_identical(res, ref, what=""):
    """Bit-identical weights, optimizer state and history."""
    assert bits(res.ensemble.params) == bits(ref.ensemble.params), f"weights differ {what}"
    for field in ("moments", "steps"):
        assert bits(getattr(res.state, field)) == bits(getattr(ref.state, field)), f"state.{field} differs {what}"
    for field in ("losses", "sync_epochs", "global_loss", "val_accuracy", "ensemble_val_accuracy"):
        assert bits(getattr(res.history, field)) == bits(getattr(ref.history, field)), f"{field} differs {what}"
    assert [h.lr for h in res.hyperparams] == [h.lr for h in ref.hyperparams]


def output_columns(res, sync_layers="last") -> slice:
    from fastffnn.sync import sync_columns
    return sync_columns(res.ensemble.topology, sync_layers)


# -- bit identity ------------------------------------------------------------------------------

# every strategy runs every (layers, batch, dtype) on the in-process backends; processes (seconds
# per run) run one combination per strategy, chosen so that together they meet last/all,
# full/mini-batch and float64/float32 -- its workers run the same loop, and the sync runs in the
# parent with the same code, so what it could get wrong is the sharing, not the math
COMBOS = list(itertools.product(("last", "all"), (None, 32), ("float64", "float32")))
PROCESS_COMBOS = {"none": ("last", None, "float64"), "average": ("all", 32, "float32"),
                  "align": ("last", None, "float32"), "weighted": ("last", 32, "float32"),
                  "best": ("all", None, "float64")}


@pytest.mark.parametrize("sync", STRATEGIES)
def test_backends_bit_identical(sync):
    for layers, batch, dtype in COMBOS:
        ref = train("serial", sync, layers, batch, dtype)
        assert ref.ensemble.params.dtype == np.dtype(dtype)
        assert np.isfinite(ref.history.losses).all()
        for backend in ("threads", "prange"):
            assert_identical(train(backend, sync, layers, batch, dtype), ref, (backend, layers, batch, dtype))
        if (layers, batch, dtype) == PROCESS_COMBOS[sync]:
            res = train("processes", sync, layers, batch, dtype)
            assert_identical(res, ref, ("processes", layers, batch, dtype))
            assert res.timing.compute.shape == res.timing.barrier_wait.shape == (N,)
            assert (res.timing.compute > 0).all() and (res.timing.barrier_wait >= 0).all()


def adam_and_sgd(batch_size=None):
    """Two instances of each optimizer, interleaved (Adam at its usual smaller learning rates)."""
    return ff.vary(optimizer=["sgd", "adam", "sgd", "adam"], lr=[0.05, 0.01, 0.1, 0.02], batch_size=batch_size)


@pytest.mark.parametrize("sync", ["none", "align", "best"])
def test_backends_bit_identical_with_adam(sync):
    """Adam beside SGD in one run, on every backend: "align" permutes both moments with the weights,
    "best" copies them and the step count between instances of one optimizer."""
    for layers, batch, dtype in COMBOS:
        ref = train("serial", sync, layers, batch, dtype, hyperparams=adam_and_sgd(batch))
        assert np.isfinite(ref.history.losses).all() and (ref.state.moments[1::2, 1] > 0).any()
        for backend in ("threads", "prange"):
            res = train(backend, sync, layers, batch, dtype, hyperparams=adam_and_sgd(batch))
            assert_identical(res, ref, (backend, layers, batch, dtype))
        if (layers, batch, dtype) == PROCESS_COMBOS[sync]:
            res = train("processes", sync, layers, batch, dtype, hyperparams=adam_and_sgd(batch))
            assert_identical(res, ref, ("processes", layers, batch, dtype))


@pytest.mark.parametrize("workers", [1, 3, 4])
def test_threads_share_each_round_whatever_the_worker_count(workers):
    # the workers take slices of a shared round of 4 instances (fastffnn.backends.threads.SharedRound):
    # one worker, three for four instances, or one per instance (whole rounds, no slicing) give
    # the serial results too
    for sync in ("none", "average"):
        assert_identical(train("threads", sync, workers=workers), train("serial", sync), (sync, workers))


def test_shared_round_gives_the_free_worker_the_rest(monkeypatch):
    """SharedRound without kernels: worker 1 takes a slice and is held there until worker 0 has
    emptied the line, so worker 0 runs every other instance to the end of the round; each
    instance's slices tile its round in epoch order, and it arrives as soon as its round is done."""
    rounds = ((0, 40), (40, 80))
    ctx = SimpleNamespace(plan=SimpleNamespace(instances=4, rounds=rounds, faults_at=lambda *a: []),
                          arrived=np.zeros(4, np.int64), cancel=threading.Event())
    log, taken, release = [], threading.Event(), threading.Event()

    def run_spans(ctx, worker, instances, start, stop, scratch):
        log.append((worker, instances[0], start, stop))
        if worker == 1 and not taken.is_set():
            taken.set()
            assert release.wait(30)
        return True

    monkeypatch.setattr(threads, "run_spans", run_spans)
    shared = threads.SharedRound(ctx, workers=2)
    finished = {}
    held = threading.Thread(target=lambda: finished.setdefault(1, shared.run(ctx, 1, None, 0, None)))
    held.start()
    assert taken.wait(30)
    finished[0] = shared.run(ctx, 0, None, 0, None)
    first = log[0][1]
    assert sorted(finished[0]) == sorted({0, 1, 2, 3} - {first})
    assert (ctx.arrived[finished[0]] == 1).all() and ctx.arrived[first] == 0     # still held
    release.set()
    held.join(30)
    assert finished[1] == [first] and (ctx.arrived == 1).all()
    assert {k for w, k, _, _ in log if w == 1} == {first}
    # the next round, lined up by the barrier action, with both workers free
    shared.advance()
    both = [threading.Thread(target=shared.run, args=(ctx, w, None, 1, None)) for w in (0, 1)]
    for t in both:
        t.start()
    for t in both:
        t.join(30)
    assert (ctx.arrived == 2).all()
    for k in range(4):
        for r, (e0, e1) in enumerate(rounds):
            spans = [(a, b) for _, i, a, b in log if i == k and e0 <= a < e1]
            assert spans[0][0] == e0 and spans[-1][1] == e1, (k, spans)
            assert all(b == a2 for (_, b), (a2, _) in zip(spans, spans[1:])), (k, spans)
    assert len(log) < 4 * 80 // 4, "slices should be several epochs, not one each"


def test_kernel_variants_agree():
    """The GIL-holding build is the same code: bit-identical; numpy agrees to ~1e-10."""
    ref = train("threads", "average")
    assert_identical(train("threads", "average", kernel="numba-gil"), ref)
    np.testing.assert_allclose(train("serial", "average", kernel="numpy").ensemble.params, ref.ensemble.params,
                               rtol=1e-8, atol=1e-10)


# -- sync strategies change learning ------------------------------------------------------------

def test_global_loss_is_mean_of_instance_losses_at_each_sync():
    res = train("threads", "average")
    assert list(res.history.sync_epochs) == list(range(EVERY, EPOCHS + 1, EVERY))
    at_sync = res.history.losses[:, res.history.sync_epochs - 1]          # (N, R)
    np.testing.assert_allclose(res.history.global_loss, at_sync.mean(axis=0), rtol=1e-12)
    assert res.history.val_accuracy.shape == (EPOCHS // EVERY, N)


def test_average_makes_synced_layers_equal():
    """A sync at the last epoch leaves the synced columns equal to their mean in every instance;
    the rest untouched (compared with the same run without any sync before that epoch)."""
    alone = train("threads", "none", sync_every=EPOCHS)
    P = alone.ensemble.params
    for layers in ("last", "all"):
        res = train("threads", "average", layers, sync_every=EPOCHS)
        cols = output_columns(res, layers)
        mean = combine(P[:, cols], np.full(N, 1.0 / N))
        assert (res.ensemble.params[:, cols] == mean).all()
        rest = np.ones(P.shape[1], bool)
        rest[cols] = False
        assert (res.ensemble.params[:, rest] == P[:, rest]).all()
        assert not (P[:, cols] == P[0, cols]).all(), "instances were equal before the sync"
    # and repeated averaging changes what is learnt
    assert not np.array_equal(train("threads", "average").history.losses, train("threads", "none").history.losses)


def _val_errors(res):
    """err_i = mean |p_i - y| on the validation data, the criterion of "weighted" and "best"."""
    return np.array([np.abs(inst.predict_proba(X_VAL)[:, 1] - Y_VAL).mean() for inst in res.ensemble])


def test_weighted_favours_better_instances():
    alone = train("threads", "none", sync_every=EPOCHS)
    P, err = alone.ensemble.params, _val_errors(alone)
    res = train("threads", "weighted", sync_every=EPOCHS, sync_options={"temperature": 0.05})
    cols = output_columns(res)
    logits = -err / 0.05
    w = np.exp(logits - logits.max())
    expected = (w / w.sum()) @ P[:, cols]
    assert (res.ensemble.params[:, cols] == res.ensemble.params[0, cols]).all()
    np.testing.assert_allclose(res.ensemble.params[0, cols], expected, rtol=1e-9, atol=1e-12)
    average = combine(P[:, cols], np.full(N, 1.0 / N))
    assert not np.allclose(res.ensemble.params[0, cols], average), "weights were uniform"
    assert not np.array_equal(train("threads", "weighted").ensemble.params, train("threads", "none").ensemble.params)


def test_best_makes_losers_copy_the_best():
    alone = train("threads", "none", sync_every=EPOCHS)
    P, err = alone.ensemble.params, _val_errors(alone)
    res = train("threads", "best", sync_every=EPOCHS, sync_options={"quantile": 0.5})
    cols = output_columns(res)
    best = int(np.argmin(err))
    losers = err > np.quantile(err, 0.5)
    assert losers.sum() == N // 2
    got = res.ensemble.params
    assert (got[losers][:, cols] == P[best, cols]).all()
    assert (got[~losers] == P[~losers]).all()
    keep = np.ones(P.shape[1], bool)
    keep[cols] = False
    assert (got[:, keep] == P[:, keep]).all(), "best copies only the synced layers"


# -- callbacks: a learning-rate schedule at sync points ------------------------------------------

def halve_lr_from_epoch_30(point):
    if point.epoch == 30:
        point.set_hyperparams(lr=0.01)
        point.set_hyperparams(instance=0, lr=0.001)


def test_callback_changes_lr_at_run_time():
    plain = train("serial", "average")
    ref = train("serial", "average", callback=halve_lr_from_epoch_30)
    assert [h.lr for h in ref.hyperparams] == [0.001, 0.01, 0.01, 0.01]
    assert np.array_equal(ref.history.losses[:, :31], plain.history.losses[:, :31])
    assert not np.array_equal(ref.history.losses[:, 31:], plain.history.losses[:, 31:])
    for backend in ("threads", "processes", "prange"):
        assert_identical(train(backend, "average", callback=halve_lr_from_epoch_30), ref, backend)


def test_callback_sees_every_sync_point():
    seen = []
    res = train("threads", "weighted", callback=lambda p: seen.append((p.epoch, p.round, p.global_loss,
                                                                       p.instance_losses.copy())))
    assert [s[:2] for s in seen] == [(e, r) for r, e in enumerate(range(EVERY, EPOCHS + 1, EVERY))]
    assert [s[2] for s in seen] == list(res.history.global_loss)
    for epoch, _, _, losses in seen:
        assert np.array_equal(losses, res.history.losses[:, epoch - 1])


# -- data stored once ---------------------------------------------------------------------------

def test_threads_share_one_copy_of_the_data(monkeypatch):
    """Every worker thread's span reads the one X array of the run: no copy per instance."""
    calls = []
    real = driver.KERNELS["numba"]

    def spy(params, moments, steps, rng, losses, X, T, *rest):
        calls.append((threading.get_ident(), X, T))
        return real(params, moments, steps, rng, losses, X, T, *rest)

    monkeypatch.setitem(driver.KERNELS, "numba", spy)
    seen = {}
    train("threads", "average", instances=8, hyperparams=None, callback=lambda p: seen.setdefault("ctx", p._ctx))
    ctx = seen.pop("ctx")
    assert ctx.X.shape == X.shape and ctx.T.shape[0] == X.shape[0]
    assert len({ident for ident, _, _ in calls if ident != threading.get_ident()}) == 2   # 2 workers
    for _, x, t in calls:
        assert x is ctx.X and t is ctx.T
        assert np.shares_memory(x, ctx.X)


def _segment_sizes(into: dict):
    """A callback recording this process's /dev/shm segments (name -> bytes) during the run."""
    def callback(point):
        if not into:
            for entry in shm_segments():
                into[entry.split("_", 3)[3]] = os.stat(os.path.join(SHM_DIR, entry)).st_size
    return callback


def test_processes_store_the_data_once():
    """The /dev/shm segments of a run do not grow with N, except the (N, ...) state rows."""
    sizes = {}
    for n in (2, 8):
        sizes[n] = {}
        train("processes", "average", instances=n, hyperparams=None, epochs=20, validation=None, workers=1,
              callback=_segment_sizes(sizes[n]))
    assert sizes[2] and set(sizes[2]) == set(sizes[8])
    itemsize = np.dtype("float64").itemsize
    assert sizes[2]["X"] == sizes[8]["X"] == X.nbytes          # once, not per instance
    assert sizes[2]["T"] == sizes[8]["T"] == len(X) * itemsize
    per_instance = {"params", "moments", "steps", "rng", "order", "losses", "hyper", "compute", "waited", "arrived",
                    "epochs_done"}
    for name in sizes[2]:
        factor = 4 if name in per_instance else 1
        assert sizes[8][name] == factor * sizes[2][name], name
    grown = sum(sizes[8].values()) - sum(sizes[2].values())
    assert grown == 3 * sum(sizes[2][name] for name in per_instance)
    assert not shm_segments()


# -- timing, N = 1 ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", IN_PROCESS)
def test_timing_per_instance(backend):
    res = train(backend, "average")
    assert res.timing.wall > 0
    assert res.timing.compute.shape == res.timing.barrier_wait.shape == (N,)
    assert (res.timing.compute > 0).all() and (res.timing.barrier_wait >= 0).all()
    assert (res.timing.compute < 30).all(), "compilation is not compute time"
