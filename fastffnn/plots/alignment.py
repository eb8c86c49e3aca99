"""Alignment: how far apart pairs of instances are before and after permutation alignment, against
how often they predict the same class.

Alignment (``fastffnn.align``) changes no instance's function, so a pair's agreement is the same
before and after and its two points lie on one horizontal line: the gap is the part of the
distance that is only a different order of hidden units.
"""
from __future__ import annotations

import itertools

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from .. import align
from . import new_figure, run_label


def pair_distances(result, X) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """For every pair (i, j), i < j: the L2 distance of their flat parameters before and after
    aligning j to i (all layers, weights and biases) and the fraction of X's rows on which their
    predicted classes agree.

    Returns
    -------
    pairs : list of (int, int)
    before, after, agreement : ndarray of shape (n_pairs,)
    """
    ensemble = result.ensemble
    topology, params = ensemble.topology, ensemble.params
    predictions = [instance.predict(X) for instance in ensemble]
    pairs = list(itertools.combinations(range(len(ensemble)), 2))
    before = np.array([align.distance(topology, params[i], params[j]) for i, j in pairs])
    after = np.array([align.distance(topology, params[i], align.align(topology, params[i], params[j]))
                      for i, j in pairs])
    agreement = np.array([np.mean(predictions[i] == predictions[j]) for i, j in pairs])
    return pairs, before, after, agreement


SPREAD = 0.35              # pairs of equal agreement are spread within +-SPREAD of one sample's step


def _spread(agreement: np.ndarray, before: np.ndarray, n_samples: int) -> np.ndarray:
    """Vertical offsets that separate pairs of equal agreement (ordered by distance before), so
    each pair's line stays visible; less than half a sample's step, so levels never mix."""
    offsets = np.zeros(len(agreement))
    for level in np.unique(agreement):
        members = np.flatnonzero(agreement == level)
        if len(members) > 1:
            offsets[members[np.argsort(before[members])]] = np.linspace(-SPREAD, SPREAD, len(members)) / n_samples
    return offsets


def plot(result, X, y=None) -> Figure:
    """Weight distance before and after alignment (x) against prediction agreement on X (y), one
    pair of points joined by a thin line per pair of instances.

    Parameters
    ----------
    result : TrainResult
        With at least two instances.
    X : array-like of shape (n_samples, n_features)
        Data the agreement is measured on (standardised like the training data).
    y : array-like of shape (n_samples,), optional
        Its labels: the "after" markers are then coloured by the pair's mean accuracy on (X, y),
        with a colour bar.

    Returns
    -------
    Figure
        One axes (and a colour bar when ``y`` is given).
    """
    n = len(result.ensemble)
    if n < 2:
        raise ValueError(f"The alignment plot compares pairs of instances, and the result has {n}; train "
                         f"with instances >= 2.")
    pairs, before, after, agreement = pair_distances(result, X)
    n_samples = len(X)
    shown = agreement + _spread(agreement, before, n_samples)
    fig = new_figure(9, 6.5)
    ax = fig.add_subplot()
    ax.add_collection(LineCollection([[(b, a), (c, a)] for b, c, a in zip(before, after, shown)],
                                     colors="0.55", linewidths=0.7, zorder=1))
    ax.scatter(before, shown, marker="o", facecolors="none", edgecolors="0.3", s=36, zorder=2,
               label="before alignment")
    if y is None:
        ax.scatter(after, shown, marker="D", color="C0", s=30, zorder=3, label="after alignment")
    else:
        accuracy = [instance.score(X, y) for instance in result.ensemble]
        mean_accuracy = np.array([(accuracy[i] + accuracy[j]) / 2 for i, j in pairs])
        points = ax.scatter(after, shown, marker="D", c=mean_accuracy, cmap="viridis", s=30, zorder=3,
                            edgecolors="0.2", linewidths=0.4, label="after alignment")
        fig.colorbar(points, ax=ax, label="mean accuracy of the pair on (X, y) (fraction correct)")
    ax.autoscale_view()
    ax.set_xlabel("L2 distance of flat parameters, all layers (weights and biases)")
    ax.set_ylabel(f"prediction agreement on X (fraction of {n_samples} samples)\npairs of equal agreement "
                  f"spread by < ±{SPREAD:g}/{n_samples} to stay visible", fontsize="small")
    ax.grid(alpha=0.3)
    # above the axes: the pairs' lines may cross any corner
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, fontsize="small", frameon=False)
    fig.suptitle(f"Alignment: {len(pairs)} pairs of {n} instances, weight distance before and after "
                 f"permutation alignment\n{run_label(result)}", fontsize="medium")
    return fig
