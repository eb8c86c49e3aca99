"""Syncing that works (DESIGN.md B5): shared starts, aligned averaging and PBT's explore,
bit-identical on every backend."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import fastffnn as ff
from fastffnn import align, kernels
from fastffnn.network import Topology
from fastffnn.sync import SyncAction, SyncSettings, sync_columns
from naive import make_data

X, Y = make_data()
OPTIONS = dict(hidden=(8, 8), hyperparams=ff.vary(lr=[0.02, 0.05, 0.1, 0.2]), epochs=40, sync_every=10,
               workers=2, seed=3, snapshots=[0])


def train(backend="serial", **kw):
    return ff.train(X, Y, backend=backend, **{**OPTIONS, **kw})


def test_shared_init_gives_identical_starts_and_independent_does_not():
    shared = train(init="shared").history.snapshots[0]
    assert all((row == shared[0]).all() for row in shared)
    independent = train().history.snapshots[0]
    assert not (independent[1] == independent[0]).all()
    assert (independent[0] == shared[0]).all(), "instance 0 draws the same start either way"


def test_bad_init_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'init' parameter of train must be a str among"):
        train(init="same")


def _sync(params, moments, topology, strategy, steps=None, err=None, layers="all", optimizers=None):
    """The barrier action's strategy alone, on (N, P) rows and their (N, 2, P) moments, in place."""
    N = len(params)
    steps = np.zeros(N, np.int64) if steps is None else steps
    hyper = np.array([ff.HyperParams(optimizer=name).row(len(X)) for name in optimizers or ["sgd"] * N])
    ctx = SimpleNamespace(params=params, moments=moments, steps=steps, hyper=hyper,
                          plan=SimpleNamespace(topology=topology))
    action = SyncAction(ctx, SyncSettings(strategy, layers), history=None)
    action._apply(err, 0)


def test_aligned_average_of_permuted_copies_is_the_network():
    """Two copies of one network whose hidden units are ordered differently: "align" averages
    them back into that network, weights and both moments alike; "average" mixes their units."""
    topology = Topology((6, 10, 7, 1), "relu")
    rng = np.random.default_rng(0)
    net, vel = rng.normal(size=topology.n_params), rng.normal(size=(2, topology.n_params))
    perms = [rng.permutation(10), rng.permutation(7)]
    rows = np.stack([net, align.permute(topology, net, perms)])
    moments = np.stack([vel, align.permute(topology, vel, perms)])
    _sync(rows, moments, topology, "align")
    assert (rows == net).all() and (moments == vel).all()
    mixed = np.stack([net, align.permute(topology, net, perms)])
    _sync(mixed, moments.copy(), topology, "average")
    assert not np.allclose(mixed[0], net)


@pytest.mark.parametrize("backend", ["threads", "processes", "prange"])
def test_align_and_shared_init_are_bit_identical_across_backends(backend):
    for kw in (dict(sync="align"), dict(sync="align", sync_layers="all", init="shared"),
               dict(sync="average", init="shared")):
        res, ref = train(backend, **kw), train(**kw)
        assert res.ensemble.params.tobytes() == ref.ensemble.params.tobytes(), kw
        assert res.history.losses.tobytes() == ref.history.losses.tobytes(), kw


def test_align_changes_learning_from_plain_averaging():
    assert train(sync="align").ensemble.params.tobytes() != train(sync="average").ensemble.params.tobytes()


EXPLORE = dict(sync="best", sync_options={"explore": True}, snapshots=[0, 10, 20, 30, 40])


def test_explore_copies_live_state_perturbs_it_and_logs_every_copy():
    seen = []
    res = train(**EXPLORE, callback=lambda point: seen.append((point.epoch, point.hyperparams)))
    exploits, snaps = res.history.exploits, res.history.snapshots
    cols = ff.sync.sync_columns(res.ensemble.topology, "last")
    hyper = {0: train().hyperparams}        # before the first sync: the starting hyperparameters
    for epoch, hps in seen:
        hyper[epoch] = hps
    assert {e.epoch for e in exploits} == {10, 20, 30, 40} and len(exploits) == 4 * 2   # 2 of 4 above the median
    for e in exploits:
        prev_epoch = max(s for s in hyper if s < e.epoch)       # the sync before: what the live rows held
        source = hyper[prev_epoch][e.source]
        target_before = hyper[prev_epoch][e.target]
        assert e.source != e.target
        assert e.old == {name: getattr(target_before, name) for name in ("lr", "l2", "momentum")}
        for name in ("lr", "l2", "momentum"):
            ratio = e.new[name] / getattr(source, name) if getattr(source, name) else 1.0
            capped = name == "momentum" and e.new[name] == ff.sync.MOMENTUM_CAP
            assert capped or ratio == pytest.approx(0.8) or ratio == pytest.approx(1.2), (e, name)
            assert getattr(hyper[e.epoch][e.target], name) == e.new[name]      # what the kernels read next
        # the weights the next span starts from: the source's output layer, as it was at the sync
        assert (snaps[e.epoch][e.target, cols] == snaps[e.epoch][e.source, cols]).all()
    assert [hp.lr for hp in res.hyperparams] != [hp.lr for hp in hyper[0]]


def test_explore_is_reproducible_for_a_seed_and_differs_across_seeds():
    a, b, c = train(**EXPLORE), train(**EXPLORE), train(**EXPLORE, seed=4)
    assert a.history.exploits == b.history.exploits
    assert a.ensemble.params.tobytes() == b.ensemble.params.tobytes()
    assert [e.new for e in a.history.exploits] != [e.new for e in c.history.exploits]


def test_explore_changes_learning_from_plain_best():
    plain = train(sync="best")
    assert plain.history.exploits == []
    assert train(**EXPLORE).ensemble.params.tobytes() != plain.ensemble.params.tobytes()


@pytest.mark.parametrize("backend", ["threads", "processes", "prange"])
def test_explore_is_bit_identical_across_backends(backend):
    res, ref = train(backend, **EXPLORE), train(**EXPLORE)
    assert res.ensemble.params.tobytes() == ref.ensemble.params.tobytes()
    assert res.history.exploits == ref.history.exploits


def test_explore_resumes_bit_identically(tmp_path):
    straight = train(**{**EXPLORE, "snapshots": [0]})
    half = train(**{**EXPLORE, "snapshots": [0]}, epochs=20, checkpoint=tmp_path / "run.npz")
    assert ff.load(tmp_path / "run.npz").history.exploits == half.history.exploits
    rest = ff.resume(tmp_path / "run.npz", X, Y, epochs=40)
    assert rest.ensemble.params.tobytes() == straight.ensemble.params.tobytes()
    assert rest.history.exploits == straight.history.exploits
    assert [hp.lr for hp in rest.hyperparams] == [hp.lr for hp in straight.hyperparams]


@pytest.mark.parametrize("options, sync, message", [
    ({"explore": True}, "average", "it needs sync='best'. Got sync='average'"),
    ({"explore": "yes"}, "best", r"sync_options\['explore'\] must be True or False. Got 'yes'"),
])
def test_bad_explore_is_refused(options, sync, message):
    with pytest.raises(ValueError, match=message):
        train(sync=sync, sync_options=options)


def test_given_starting_parameters_are_the_start_and_are_checked():
    P = train().ensemble.topology.n_params
    start = np.random.default_rng(0).normal(size=(4, P)) / 22
    res = train(init=start)
    assert (res.history.snapshots[0] == start).all() and res.config["init"] == "given"
    with pytest.raises(ValueError, match=rf"finite floats of shape \(4, {P}\).*Got an array of float64 of shape \(3, {P}\)"):
        train(init=start[:3])
    start[1, 5] = np.nan
    with pytest.raises(ValueError, match="with NaN or Inf"):
        train(init=start)


def _next_span(topology, hyper, params, moments, steps, epochs=3):
    """(params, moments) of one instance after ``epochs`` more full-batch epochs on X, Y."""
    params, moments, steps = params.copy(), moments.copy(), steps.copy()
    n = len(X)
    work, grad = np.zeros(kernels.workspace_size(topology.sizes, n)), np.zeros_like(params)
    kernels.train_span(params, moments, steps, np.zeros(1, np.uint64), np.empty(epochs), X, Y[:, None].astype(float),
                       topology.sizes_array, topology.act_code, hyper, work, grad, np.arange(n), np.zeros(1, np.int64),
                       np.zeros(1, np.int64), topology.binary)
    return params, moments


def test_align_permutes_both_adam_moments_so_an_aligned_copy_trains_on_like_the_original():
    """An Adam-trained instance and a copy with its hidden units permuted, weights and both moments
    alike: the copy's next span is the original's, permuted (to rounding: the sums run in another
    order); "align" turns the copy back into the original, moments included, so their next spans
    are bit-identical.  Had the moments stayed in the copy's order, the next span would differ."""
    res = train(hyperparams=ff.HyperParams(optimizer="adam", lr=0.01), instances=1, activation="tanh", epochs=20)
    topology, hyper = res.ensemble.topology, res.state.hyper[0]
    net, moments, steps = res.ensemble.params[0], res.state.moments[0], res.state.steps[:1]
    rng = np.random.default_rng(1)
    perms = [rng.permutation(8), rng.permutation(8)]
    copy, copy_moments = align.permute(topology, net, perms), align.permute(topology, moments, perms)
    after = _next_span(topology, hyper, net, moments, steps)
    for got, want in zip(_next_span(topology, hyper, copy, copy_moments, steps), after):
        np.testing.assert_allclose(got, align.permute(topology, want, perms), rtol=1e-9, atol=1e-12)
    unpermuted = _next_span(topology, hyper, copy, moments, steps)[0]
    assert not np.allclose(unpermuted, align.permute(topology, after[0], perms), rtol=1e-3, atol=1e-5)
    rows, state = np.stack([net, copy]), np.stack([moments, copy_moments])
    _sync(rows, state, topology, "align", steps=np.repeat(steps, 2))
    assert (rows == net).all() and (state == moments).all()
    assert all(np.array_equal(a, b) for a, b in zip(_next_span(topology, hyper, rows[1], state[1], steps), after))


def test_best_copies_both_moments_and_the_step_count_with_the_weights():
    """The losers of "best" (instances 0 and 3 here) take the best instance's synced columns of the
    weights; a loser of the best's optimizer takes those of both moments too, and its step count
    (Adam's t); one of another optimizer keeps its own state, which its update rule reads."""
    topology = Topology((6, 10, 7, 1), "relu")
    rng = np.random.default_rng(2)
    params, moments = rng.normal(size=(4, topology.n_params)), rng.normal(size=(4, 2, topology.n_params))
    steps = np.array([5, 7, 9, 11])
    before = params.copy(), moments.copy()
    _sync(params, moments, topology, "best", steps, err=np.array([0.3, 0.1, 0.2, 0.4]), layers="last",
          optimizers=["adam", "adam", "adam", "sgd"])
    cols = sync_columns(topology, "last")
    rest = np.setdiff1d(np.arange(topology.n_params), np.arange(cols.start, cols.stop))
    for loser in (0, 3):
        assert (params[loser, cols] == params[1, cols]).all() and (params[loser, rest] == before[0][loser, rest]).all()
    assert (moments[0, :, cols] == moments[1, :, cols]).all() and (moments[0][:, rest] == before[1][0][:, rest]).all()
    assert (params[1:3] == before[0][1:3]).all() and (moments[1:] == before[1][1:]).all()
    assert steps.tolist() == [7, 7, 9, 11]


def test_explore_copies_the_optimizer_with_the_state():
    """PBT copies a whole configuration: a loser of another optimizer takes the best one's, its
    moments and its step count, so its state never means something else."""
    hps = ff.vary(optimizer=["sgd", "adam", "sgd", "adam"], lr=[0.02, 0.01, 0.1, 0.005])
    res = train(hyperparams=hps, **EXPLORE)
    first = min(e.epoch for e in res.history.exploits)
    assert any(hps[e.target].optimizer != hps[e.source].optimizer for e in res.history.exploits if e.epoch == first)
    last = max(e.epoch for e in res.history.exploits)
    targets = {e.target: e.source for e in res.history.exploits if e.epoch == last}
    assert all(res.hyperparams[t].optimizer == res.hyperparams[s].optimizer for t, s in targets.items())
    assert all((res.state.steps[t] == res.state.steps[s]) for t, s in targets.items())
