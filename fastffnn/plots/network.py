"""Network: one instance drawn as a layered NetworkX graph of its weights, at each snapshot epoch.

Legibility: a 30-input layer alone has 30 x width edges, so each layer draws only its
``max_edges`` strongest edges (largest |weight|) at each epoch, weakest first so the strong ones
lie on top; the title says how many of each layer's edges are shown.  Every drawn epoch shares one
symmetric colour scale, so colours compare across epochs: edge colour and width are the weight,
node colour the unit's bias (input units have none and are grey).
"""
from __future__ import annotations

import math

import networkx as nx
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

from . import WEIGHT_CMAP, check_instance, new_figure, run_label, symmetric_norm

MAX_COLUMNS = 4             # subplots per row
EDGE_WIDTH = (0.3, 3.0)     # points: an edge of weight 0, and one of the largest |weight|


def graph(topology, flat: np.ndarray) -> nx.DiGraph:
    """The network of one flat parameter row (P,) as a DiGraph.

    Nodes ``(l, i)``: unit i of layer l (0 = input), with attributes ``layer`` and ``bias`` (None
    for inputs).  Edges ``(l, i) -> (l + 1, j)`` with attribute ``weight`` = W_l[i, j].
    """
    weights, biases = topology.views(np.asarray(flat))
    G = nx.DiGraph()
    G.add_nodes_from(((0, i), {"layer": 0, "bias": None}) for i in range(topology.sizes[0]))
    for l, (w, b) in enumerate(zip(weights, biases)):
        G.add_nodes_from(((l + 1, j), {"layer": l + 1, "bias": float(b[j])}) for j in range(w.shape[1]))
        G.add_weighted_edges_from(((l, i), (l + 1, j), float(w[i, j]))
                                  for i in range(w.shape[0]) for j in range(w.shape[1]))
    return G


def layered_layout(G: nx.DiGraph, sizes: tuple) -> dict:
    """{node: (x, y)}: layers left to right (``nx.multipartite_layout``), unit 0 of each at the top.

    Every layer of more than one unit is spread over the full height: multipartite spacing would
    squeeze 8 hidden units into a quarter of the height beside 30 inputs.
    """
    # the dict form keeps a layer's units in index order (the attribute form groups them in sets)
    layers = {l: [(l, i) for i in range(width)] for l, width in enumerate(sizes)}
    pos = nx.multipartite_layout(G, subset_key=layers)
    half = max(abs(y) for _, y in pos.values()) or 1.0
    return {(l, i): (pos[(l, i)][0], half * (1 - 2 * i / (sizes[l] - 1)) if sizes[l] > 1 else 0.0)
            for l, i in G}


def _strongest(G: nx.DiGraph, n_layers: int, max_edges: int) -> list:
    """Each layer's ``max_edges`` edges of largest |weight|, all layers, weakest first."""
    chosen = []
    for l in range(n_layers):
        edges = [(u, v, w) for u, v, w in G.edges(data="weight") if u[0] == l]
        edges.sort(key=lambda e: abs(e[2]))
        chosen += edges[-max_edges:]
    return sorted(chosen, key=lambda e: abs(e[2]))


def plot(result, instance: int = 0, epochs=None, max_edges: int = 64) -> Figure:
    """The weights of one instance at each snapshot epoch, one subplot per epoch.

    Parameters
    ----------
    result : TrainResult
        Needs ``result.history.snapshots`` ({epoch: (N, P) parameters}; ``train(..., snapshots=[...])``).
    instance : int
        Which instance.
    epochs : sequence of int, optional
        Snapshot epochs to draw, in the order given; all of them, ascending, by default.
    max_edges : int
        Edges drawn per layer at most: the strongest by |weight|.

    Returns
    -------
    Figure
        One axes per epoch (in rows of up to ``MAX_COLUMNS``) and one shared colour bar.
    """
    snapshots = result.history.snapshots
    if not snapshots:
        raise ValueError("This result has no weight snapshots, so there is no network to draw. Train with "
                         "snapshots=[epoch, ...], e.g. fastffnn.train(..., epochs=1000, snapshots=[0, 500, "
                         "1000]) (epoch 0 is the initial weights).")
    k = check_instance(result, instance, "instance", "network.plot")
    if epochs is None:
        epochs = sorted(snapshots)
    missing = [e for e in epochs if e not in snapshots]
    if missing or not len(epochs):
        raise ValueError(f"The 'epochs' parameter of network.plot must name snapshot epochs among "
                         f"{sorted(snapshots)}. Got {list(epochs)!r} instead.")
    if isinstance(max_edges, bool) or not isinstance(max_edges, (int, np.integer)) or max_edges < 1:
        raise ValueError(f"The 'max_edges' parameter of network.plot must be an int in the range [1, inf). "
                         f"Got {max_edges!r} instead.")
    topology = result.ensemble.topology
    sizes, n_layers = topology.sizes, len(topology.sizes) - 1
    rows = [np.asarray(snapshots[e])[k] for e in epochs]
    norm = symmetric_norm(*rows)
    mappable = ScalarMappable(norm, WEIGHT_CMAP)

    ncols = min(MAX_COLUMNS, len(epochs))
    nrows = math.ceil(len(epochs) / ncols)
    fig = new_figure(1.2 + 4.2 * ncols, 1.3 + 4.6 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(epochs):]:
        ax.remove()
    for ax, epoch, row in zip(axes, epochs, rows):
        G = graph(topology, row)
        pos = layered_layout(G, sizes)
        edges = _strongest(G, n_layers, max_edges)
        values = np.array([w for _, _, w in edges])
        nx.draw_networkx_edges(G, pos, edgelist=[(u, v) for u, v, _ in edges], ax=ax, arrows=False,
                               edge_color=values, edge_cmap=mappable.get_cmap(), edge_vmin=norm.vmin,
                               edge_vmax=norm.vmax,
                               width=EDGE_WIDTH[0] + (EDGE_WIDTH[1] - EDGE_WIDTH[0]) * np.abs(values) / norm.vmax)
        inputs = [(0, i) for i in range(sizes[0])]
        units = [n for n in G if n[0] > 0]
        nx.draw_networkx_nodes(G, pos, nodelist=inputs, ax=ax, node_size=40, node_color="0.85",
                               edgecolors="0.3", linewidths=0.6)
        nx.draw_networkx_nodes(G, pos, nodelist=units, ax=ax, node_size=60, edgecolors="0.2", linewidths=0.6,
                               node_color=[G.nodes[n]["bias"] for n in units], cmap=mappable.get_cmap(),
                               vmin=norm.vmin, vmax=norm.vmax)
        xs = [pos[(l, 0)][0] for l in range(len(sizes))]
        names = ["input", *(f"hidden {l}" for l in range(1, n_layers)), "output"]
        ax.set_xticks(xs, [f"{name}\n{width} unit{'s' * (width != 1)}" for name, width in zip(names, sizes)])
        ax.tick_params(bottom=True, labelbottom=True, left=False, labelleft=False)
        ax.set_xlabel("layer")
        ax.set_ylabel("unit (index 0 at the top)")
        ax.set_title(f"epoch {epoch}")
        ax.set_frame_on(False)
    fig.colorbar(mappable, ax=list(axes[:len(epochs)]), label="weight (edges) and bias (nodes)", shrink=0.8)
    total = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    shown = ", ".join(f"all {m}" if m <= max_edges else f"strongest {max_edges} of {m}" for m in total)
    hp = result.ensemble[k].hyperparams
    optimizer = f"momentum={hp.momentum:g}" if hp.optimizer == "sgd" else f"adam, betas={hp.beta1:g}/{hp.beta2:g}"
    fig.suptitle(f"Instance {k} (lr={hp.lr:g}, l2={hp.l2:g}, {optimizer}): weights at each "
                 f"snapshot epoch\nedges drawn per layer: {shown}; colour and width: weight, node colour: "
                 f"bias\n{run_label(result)}")
    return fig
