"""fastffnn.align: permuting hidden units keeps the function; weight matching undoes a permutation
exactly; the distance it reports."""
import numpy as np
import pytest

import fastffnn as ff
from fastffnn import align
from fastffnn.network import Instance

HIDDEN = [(7,), (6, 5), (5, 4, 3)]       # 1, 2 and 3 hidden layers


def _data(classes: int = 2, n: int = 90, features: int = 5, seed: int = 0):
    """Labels from the argmax of a random linear map: learnable, with every class present."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features))
    return X, np.argmax(X @ rng.normal(size=(features, classes)), axis=1)


def _trained(hidden, activation="relu", classes=2, instances=3):
    X, y = _data(classes)
    res = ff.train(X, y, hidden=hidden, activation=activation, instances=instances, epochs=20,
                   backend="serial", seed=1)
    return res, X


def _derangement(rng, width: int) -> np.ndarray:
    """A random permutation of range(width) that is not the identity."""
    while True:
        perm = rng.permutation(width)
        if width < 2 or not np.array_equal(perm, np.arange(width)):
            return perm


def _random_perms(topology, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [_derangement(rng, width) for width in topology.sizes[1:-1]]


def _instance(res, row: np.ndarray) -> Instance:
    return Instance(res.ensemble.topology, row, res.ensemble[0].hyperparams, res.ensemble.classes_)


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("activation, classes", [("relu", 2), ("tanh", 2), ("relu", 3)])
def test_permuting_hidden_units_never_changes_predictions(hidden, activation, classes):
    res, X = _trained(hidden, activation, classes)
    topology, row = res.ensemble.topology, res.ensemble.params[0]
    permuted = align.permute(topology, row, _random_perms(topology))
    assert permuted.shape == row.shape and permuted.dtype == row.dtype
    assert not np.array_equal(permuted, row)
    assert np.array_equal(np.sort(permuted), np.sort(row))      # the same values, moved
    np.testing.assert_allclose(_instance(res, permuted).predict_proba(X), res.ensemble[0].predict_proba(X),
                               rtol=1e-12, atol=1e-14)
    # the input and output layers keep their order: the output bias is where it was
    _, b_ref = topology.views(row)
    _, b_perm = topology.views(permuted)
    assert np.array_equal(b_perm[-1], b_ref[-1])


@pytest.mark.parametrize("hidden", HIDDEN)
def test_aligning_a_permuted_copy_recovers_the_original_bit_for_bit(hidden):
    res, _ = _trained(hidden)
    topology, row = res.ensemble.topology, res.ensemble.params[1]
    perms = _random_perms(topology, seed=3)
    copy = align.permute(topology, row, perms)
    assert align.distance(topology, row, copy) > 0
    aligned = align.align(topology, row, copy)
    assert np.array_equal(aligned, row)
    assert align.distance(topology, row, aligned) == 0.0
    # match returns the inverse of the permutation that made the copy
    for found, made in zip(align.match(topology, row, copy), perms):
        assert np.array_equal(found, np.argsort(made))


@pytest.mark.parametrize("hidden", HIDDEN)
def test_match_of_a_network_with_itself_is_the_identity(hidden):
    res, _ = _trained(hidden)
    topology = res.ensemble.topology
    for row in res.ensemble.params:
        perms = align.match(topology, row, row)
        assert [p.tolist() for p in perms] == [list(range(w)) for w in topology.sizes[1:-1]]


@pytest.mark.parametrize("hidden", HIDDEN)
def test_averaging_an_aligned_copy_gives_the_original_and_an_unaligned_one_does_not(hidden):
    res, X = _trained(hidden)
    topology, row = res.ensemble.topology, res.ensemble.params[0]
    copy = align.permute(topology, row, _random_perms(topology, seed=5))
    np.testing.assert_allclose((row + align.align(topology, row, copy)) / 2, row, rtol=1e-15, atol=0)
    naive = (row + copy) / 2
    assert align.distance(topology, row, naive) > 1e-3
    assert not np.allclose(_instance(res, naive).predict_proba(X), res.ensemble[0].predict_proba(X))


@pytest.mark.parametrize("hidden", HIDDEN)
def test_aligning_independent_instances_never_increases_the_distance_nor_changes_the_function(hidden):
    res, X = _trained(hidden, instances=4)
    topology, params = res.ensemble.topology, res.ensemble.params
    for k in range(1, len(params)):
        aligned = align.align(topology, params[0], params[k])
        assert align.distance(topology, params[0], aligned) <= align.distance(topology, params[0], params[k])
        np.testing.assert_allclose(_instance(res, aligned).predict_proba(X), res.ensemble[k].predict_proba(X),
                                   rtol=1e-12, atol=1e-14)
    # with at least one hidden layer of width > 1 and independent starts, something moves
    moved = [not np.array_equal(align.align(topology, params[0], params[k]), params[k])
             for k in range(1, len(params))]
    assert any(moved)


def test_permute_applies_one_permutation_to_every_row_of_a_stack():
    res, _ = _trained((6, 5))
    topology, params = res.ensemble.topology, res.ensemble.params
    perms = _random_perms(topology)
    stacked = align.permute(topology, params, perms)
    assert stacked.shape == params.shape
    for k in range(len(params)):
        assert np.array_equal(stacked[k], align.permute(topology, params[k], perms))
    deeper = np.stack([params, 2 * params])                 # (2, N, P), e.g. params and momentum
    assert np.array_equal(align.permute(topology, deeper, perms)[1], 2 * stacked)
    assert np.array_equal(align.align(topology, params[0], stacked),
                          np.stack([align.align(topology, params[0], r) for r in stacked]))
    # undoing the permutation with its inverse is bit-exact, and the input is not changed
    before = params.copy()
    inverse = [np.argsort(p) for p in perms]
    assert np.array_equal(align.permute(topology, stacked, inverse), params)
    assert np.array_equal(params, before)


def test_distance_is_the_l2_norm_over_the_chosen_layers():
    res, _ = _trained((6, 5))
    topology, (a, b) = res.ensemble.topology, res.ensemble.params[:2]
    assert align.distance(topology, a, b) == pytest.approx(np.linalg.norm(a - b), rel=1e-14)
    (w0, b0), _, (w2, b2) = topology.layer_slices()
    last = np.concatenate([(a - b)[w2], (a - b)[b2]])
    assert align.distance(topology, a, b, layers="last") == pytest.approx(np.linalg.norm(last), rel=1e-14)
    first = np.concatenate([(a - b)[w0], (a - b)[b0]])
    assert align.distance(topology, a, b, layers=[0]) == pytest.approx(np.linalg.norm(first), rel=1e-14)
    assert align.distance(topology, a, a) == 0.0


def test_bad_arguments_are_rejected_with_the_bad_value():
    res, _ = _trained((6, 5))
    topology, row = res.ensemble.topology, res.ensemble.params[0]
    with pytest.raises(ValueError, match=r"one permutation per hidden layer \(2 .*Got 1 instead"):
        align.permute(topology, row, [np.arange(6)])
    with pytest.raises(ValueError, match=r"perms\[1\] must be a permutation of range\(5\)"):
        align.permute(topology, row, [np.arange(6), np.array([0, 0, 1, 2, 3])])
    with pytest.raises(ValueError, match=r"shape \(P,\) with P = .*Got shape \(3,\)"):
        align.match(topology, row, row[:3])
    with pytest.raises(ValueError, match="Got 3 instead"):
        align.distance(topology, row, row, layers=[3])
    with pytest.raises(ValueError, match="'all', 'last'"):
        align.distance(topology, row, row, layers="first")
