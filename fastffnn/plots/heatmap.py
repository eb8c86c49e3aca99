"""Heatmap: two instances' weight matrices, layer by layer, and their difference."""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator

from . import WEIGHT_CMAP, check_instance, new_figure, run_label, symmetric_norm


def plot(result, pair: tuple = (0, 1)) -> Figure:
    """Per layer (rows), instance a's weights, instance b's weights and a - b (columns), on one
    symmetric colour scale per layer with its colour bar.  Biases are not shown.

    Parameters
    ----------
    result : TrainResult
    pair : (int, int)
        The two instances, ``(a, b)``.

    Returns
    -------
    Figure
        3 x L image axes (L = layers) and L colour bars.  Each image is the (fan_in, fan_out) matrix:
        fan_in units down, fan_out units across.
    """
    if len(pair) != 2:
        raise ValueError(f"The 'pair' parameter of heatmap.plot must be two instance indices. Got {pair!r} "
                         f"instead.")
    a, b = (check_instance(result, k, "pair", "heatmap.plot") for k in pair)
    sizes = result.ensemble.topology.sizes
    weights_a, weights_b = result.ensemble[a].weights, result.ensemble[b].weights
    L = len(weights_a)
    fig = new_figure(12, 1.2 + 2.8 * L)
    axes = fig.subplots(L, 3, squeeze=False)
    for l, (wa, wb) in enumerate(zip(weights_a, weights_b)):
        diff = wa - wb
        norm = symmetric_norm(wa, wb, diff)
        name = "output layer" if l == L - 1 else f"layer {l + 1}"
        for ax, matrix, what in zip(axes[l], (wa, wb, diff), (f"instance {a}", f"instance {b}",
                                                               f"instance {a} − instance {b}")):
            image = ax.imshow(matrix, cmap=WEIGHT_CMAP, norm=norm, aspect="auto", interpolation="nearest")
            ax.set_title(f"{name} ({sizes[l]} → {sizes[l + 1]}): {what}", fontsize="medium")
            ax.set_xlabel("fan_out unit (index)")
            ax.set_ylabel("fan_in unit (index)")
            for axis, units in ((ax.xaxis, matrix.shape[1]), (ax.yaxis, matrix.shape[0])):
                axis.set_major_locator(FixedLocator(range(units)) if units <= 10 else MaxNLocator(integer=True))
            if matrix is diff and not diff.any():
                ax.text(0.5, 0.5, "identical (0 everywhere)", transform=ax.transAxes, ha="center",
                        va="center", color="0.3")
        fig.colorbar(image, ax=list(axes[l]), label="weight", shrink=0.9)
    fig.suptitle(f"Weights of instances {a} and {b} and their difference, per layer (biases not shown)\n"
                 f"{run_label(result)}")
    return fig
