"""Syncing that works (DESIGN.md B5): shared starts, aligned averaging and PBT's explore,
bit-identical on every backend."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import fastffnn as ff
from fastffnn import align
from fastffnn.network import Topology
from fastffnn.sync import SyncAction, SyncSettings
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


def _sync(params, velocity, topology, strategy):
    """The barrier action's strategy alone, on (N, P) rows, over every layer."""
    ctx = SimpleNamespace(params=params, velocity=velocity, plan=SimpleNamespace(topology=topology))
    action = SyncAction(ctx, SyncSettings(strategy, "all"), history=None)
    action._apply(None, 0)


def test_aligned_average_of_permuted_copies_is_the_network():
    """Two copies of one network whose hidden units are ordered differently: "align" averages
    them back into that network, weights and momentum alike; "average" mixes their units."""
    topology = Topology((6, 10, 7, 1), "relu")
    rng = np.random.default_rng(0)
    net, vel = rng.normal(size=topology.n_params), rng.normal(size=topology.n_params)
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
