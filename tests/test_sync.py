"""Syncing that works (DESIGN.md B5): shared starts and aligned averaging, bit-identical on every
backend."""
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
    action._apply(None)


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
