"""Permutation alignment of hidden units by weight matching (Git Re-Basin, Ainsworth et al. 2023).

Reordering the units of a hidden layer -- its weight columns and bias entries, and the rows of
the next layer's weights, all by the same permutation -- never changes what the network
computes.  Two independently trained networks usually hold similar units in different orders, so
averaging them unaligned mixes unrelated units.  ``match`` finds, for each hidden layer, the order
of ``other``'s units that brings its parameters closest to ``reference``'s; ``permute`` applies it;
``align`` does both.  The input and output layers are never permuted.

Shapes: L = layers (hidden layers + 1), H = hidden layers = L - 1, P = parameters of one instance,
``sizes = (F, h_1, ..., h_H, K)``; layer l has weights (sizes[l], sizes[l + 1]) and bias
(sizes[l + 1],) in the flat row (``Topology.layer_slices``).  A permutation ``perm`` of hidden
layer h is an int array (h_h,): unit j of the permuted network is unit ``perm[j]`` of the original.

Why coordinate descent (the paper's Algorithm 1), started from a greedy forward pass and from
the identity:
- The objective is the whole network's: maximise <reference, permute(other, perms)> over all
  parameters, which is the same as minimising ``distance(reference, align(reference, other))``
  because a permutation keeps every norm.  Hidden layer h's permutation appears in two terms:
  the weights into it (with h - 1's permutation applied to their rows) plus its bias, and the
  weights out of it (with h + 1's permutation applied to their columns).  With the other layers
  fixed, that is one linear assignment problem, solved exactly by ``linear_sum_assignment``; each
  solve can only raise the objective, so sweeping the layers until none changes terminates.
- The greedy layer-by-layer pass alone (each layer matched on its incoming weights and bias after
  the previous layer's permutation) ignores where a unit sends its output; descent from it ends
  0.3-4 % closer on the pairs of untrained (He-initialised) 30-32-32-1, 30-64-64-64-1 and
  10-8-8-8-8-3 networks measured.
- Descent ends in a local optimum that depends on its start.  From the greedy pass it usually ends
  lowest (13.0 against 13.3 from the identity on the 30-32-32-1 pairs), but on deep narrow
  networks (10-8-8-8-8-3) the identity start sometimes wins.  Both are run and the better kept (the
  greedy one on a tie), so aligning never increases the distance; two descents cost little at the
  widths fastffnn trains.  Either start recovers a permuted copy exactly.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .network import Topology

MAX_SWEEPS = 100        # coordinate-descent sweeps; a handful suffice in practice


def _check_row(topology: Topology, flat: np.ndarray, name: str, caller: str, rows_ok: bool) -> np.ndarray:
    flat = np.asarray(flat)
    if flat.shape[-1:] != (topology.n_params,) or (flat.ndim != 1 and not rows_ok):
        want = "(..., P)" if rows_ok else "(P,)"
        raise ValueError(f"The '{name}' parameter of {caller} must be a flat parameter array of shape {want} "
                         f"with P = {topology.n_params} for sizes {topology.sizes}. Got shape {flat.shape} "
                         f"instead.")
    return flat


def _check_perms(topology: Topology, perms: Sequence) -> list:
    widths = topology.sizes[1:-1]
    if len(perms) != len(widths):
        raise ValueError(f"The 'perms' parameter of permute must hold one permutation per hidden layer "
                         f"({len(widths)} for sizes {topology.sizes}). Got {len(perms)} instead.")
    out = []
    for h, (perm, width) in enumerate(zip(perms, widths)):
        perm = np.asarray(perm)
        if perm.shape != (width,) or not np.array_equal(np.sort(perm), np.arange(width)):
            raise ValueError(f"perms[{h}] must be a permutation of range({width}) (hidden layer {h + 1} "
                             f"has {width} units). Got {perm.tolist()!r} instead.")
        out.append(perm.astype(np.intp))
    return out


def permutation_index(topology: Topology, perms: Sequence) -> np.ndarray:
    """(P,) gather index of a permutation: ``flat[..., index]`` is the permuted network.

    Layer l's weights are reindexed ``W[p_in][:, p_out]`` and its bias ``b[p_out]``, where p_out
    is the permutation of the layer's own units (the identity for the output layer) and p_in that
    of the layer before (the identity for the input layer).
    """
    perms = _check_perms(topology, perms)
    index = np.arange(topology.n_params)
    weights, biases = topology.views(index)         # views: assigning to them fills index
    p_in = [np.arange(topology.sizes[0]), *perms]
    p_out = [*perms, np.arange(topology.sizes[-1])]
    for w, b, rows, cols in zip(weights, biases, p_in, p_out):
        w[...], b[...] = w[np.ix_(rows, cols)], b[cols]     # fancy indexing copies first
    return index


def permute(topology: Topology, flat: np.ndarray, perms: Sequence) -> np.ndarray:
    """Reorder the hidden units of a flat parameter row (or of every row of a stack).

    Parameters
    ----------
    topology : Topology
    flat : ndarray of shape (P,) or (..., P)
        Parameters, or any state laid out like them (e.g. momentum): every leading index is one
        row, permuted the same way.  Not changed.
    perms : sequence of H int arrays, perms[h] of shape (sizes[h + 1],)
        One permutation per hidden layer (see ``match``); unit j of the result is unit
        ``perms[h][j]`` of ``flat``.

    Returns
    -------
    ndarray of the shape and dtype of ``flat``
        A new array; the values are copied, never recomputed, so permuting back is bit-exact.
    """
    flat = _check_row(topology, flat, "flat", "permute", rows_ok=True)
    return flat[..., permutation_index(topology, perms)]


def _similarity(ref: tuple, other: tuple, perms: list, h: int, outgoing: bool) -> np.ndarray:
    """(h_h, h_h) similarity of reference unit i and other unit j of hidden layer h: the inner
    product of their incoming weights (after layer h - 1's permutation) and biases, plus, when
    ``outgoing``, of their outgoing weights (after layer h + 1's permutation)."""
    (w_ref, b_ref), (w_other, b_other) = ref, other
    rows = perms[h - 1] if h > 0 else slice(None)
    S = w_ref[h].T @ w_other[h][rows] + np.outer(b_ref[h], b_other[h])
    if outgoing:
        cols = perms[h + 1] if h + 1 < len(perms) else slice(None)
        S += w_ref[h + 1] @ w_other[h + 1][:, cols].T
    return S


def _assign(S: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment     # on first use: keeps `import fastffnn.align` light
    rows, cols = linear_sum_assignment(S, maximize=True)
    return cols[np.argsort(rows)]


def _descend(ref: tuple, other: tuple, perms: list, max_sweeps: int) -> list:
    """Coordinate descent over the hidden layers from ``perms``, until a sweep changes none."""
    perms = [p.copy() for p in perms]
    for _ in range(max_sweeps):
        changed = False
        for h in range(len(perms)):
            S = _similarity(ref, other, perms, h, outgoing=True)
            new = _assign(S)
            units = np.arange(len(new))
            old_value, new_value = S[units, perms[h]].sum(), S[units, new].sum()
            # accept only a real gain: a tie or a rounding-level change could cycle forever
            if new_value > old_value + 1e-12 * max(1.0, abs(old_value)):
                perms[h], changed = new, True
        if not changed:
            break
    return perms


def match(topology: Topology, reference: np.ndarray, other: np.ndarray, *,
          max_sweeps: int = MAX_SWEEPS) -> list:
    """The hidden-unit permutations that align ``other`` to ``reference`` by weight matching.

    Maximises the inner product of ``reference`` and ``permute(topology, other, perms)`` over all
    weights and biases, i.e. minimises their L2 ``distance``; see the module docstring for the
    algorithm.  The result never has a larger distance than the identity.

    Parameters
    ----------
    topology : Topology
    reference, other : ndarray of shape (P,)
        Flat parameter rows; not changed.  Similarities are computed in float64.
    max_sweeps : int
        Coordinate-descent sweeps at most, per start.

    Returns
    -------
    list of H int arrays, perms[h] of shape (sizes[h + 1],)
        For ``permute(topology, other, perms)``; the identity when ``other`` equals ``reference``
        (and its units are distinct).
    """
    reference = _check_row(topology, reference, "reference", "match", rows_ok=False)
    other = _check_row(topology, other, "other", "match", rows_ok=False)
    flat_ref, flat_other = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    ref, oth = topology.views(flat_ref), topology.views(flat_other)
    greedy = []
    for h in range(len(topology.sizes) - 2):
        greedy.append(_assign(_similarity(ref, oth, greedy, h, outgoing=False)))
    identity = [np.arange(width) for width in topology.sizes[1:-1]]
    candidates = [_descend(ref, oth, start, max_sweeps) for start in (greedy, identity)]
    scores = [flat_ref @ flat_other[permutation_index(topology, perms)] for perms in candidates]
    return candidates[int(np.argmax(scores))]       # argmax takes the first, the greedy start, on a tie


def align(topology: Topology, reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``other`` with its hidden units permuted to match ``reference``; the same function.

    Parameters
    ----------
    topology : Topology
    reference : ndarray of shape (P,)
    other : ndarray of shape (P,) or (M, P)
        One row, or M rows each matched to ``reference`` on its own; not changed.

    Returns
    -------
    ndarray of the shape and dtype of ``other``
    """
    other = _check_row(topology, other, "other", "align", rows_ok=True)
    if other.ndim == 2:
        return np.stack([align(topology, reference, row) for row in other]) if len(other) else other.copy()
    if other.ndim != 1:
        raise ValueError(f"The 'other' parameter of align must have shape (P,) or (M, P). Got shape "
                         f"{other.shape} instead.")
    return permute(topology, other, match(topology, reference, other))


def layer_mask(topology: Topology, layers: str | Sequence[int] = "all") -> np.ndarray:
    """(P,) boolean mask of the weights and biases of ``layers``: "all", "last" (the output layer,
    as ``sync_layers="last"``) or layer indices 0 .. L - 1 (layer l maps sizes[l] to sizes[l + 1])."""
    n_layers = len(topology.sizes) - 1
    if isinstance(layers, str):
        if layers not in ("all", "last"):
            raise ValueError(f"The 'layers' parameter must be 'all', 'last' or a sequence of layer indices "
                             f"in [0, {n_layers}). Got {layers!r} instead.")
        layers = range(n_layers) if layers == "all" else [n_layers - 1]
    mask = np.zeros(topology.n_params, dtype=bool)
    slices = topology.layer_slices()
    for l in layers:
        if not 0 <= l < n_layers:
            raise ValueError(f"The 'layers' parameter must hold layer indices in [0, {n_layers}) for sizes "
                             f"{topology.sizes}. Got {l!r} instead.")
        w, b = slices[l]
        mask[w] = mask[b] = True
    return mask


def distance(topology: Topology, a: np.ndarray, b: np.ndarray, layers: str | Sequence[int] = "all") -> float:
    """Euclidean (L2) distance ``||a - b||_2`` between two flat parameter rows, over the weights
    and biases of ``layers``, computed in float64; no normalisation, no alignment (``align`` first
    to measure the distance up to permutation).

    Parameters
    ----------
    topology : Topology
    a, b : ndarray of shape (P,)
    layers : "all", "last" or sequence of int
        "all" the whole row; "last" the output layer (the part ``sync_layers="last"`` averages);
        or layer indices 0 .. L - 1.

    Returns
    -------
    float
        0.0 exactly when the chosen entries are equal.
    """
    a = _check_row(topology, a, "a", "distance", rows_ok=False)
    b = _check_row(topology, b, "b", "distance", rows_ok=False)
    mask = layer_mask(topology, layers)
    return float(np.linalg.norm(a[mask].astype(np.float64) - b[mask].astype(np.float64)))
