"""Convergence: each instance's training loss, the global loss at sync points, and validation
accuracy per instance and of the ensemble."""
from __future__ import annotations

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from . import new_figure, run_label

LEGEND_INSTANCES = 10       # up to this many instances get a legend entry each, more a colour bar
SYNC_LINES = 25             # up to this many sync points are vertical lines, more are rug ticks


def _instance_colours(n: int):
    """A colour per instance, and the colour bar's mappable when there are too many to list."""
    if n <= LEGEND_INSTANCES:
        return [f"C{k}" for k in range(n)], None
    mappable = ScalarMappable(Normalize(0, n - 1), "viridis")
    return [mappable.to_rgba(k) for k in range(n)], mappable


def _per_instance(ax, x: np.ndarray, rows: np.ndarray, colours: list, many: bool, **style) -> None:
    """One line per instance, rows (N, len(x)); one legend entry each, or one for all when ``many``."""
    for k, row in enumerate(rows):
        ax.plot(x, row, color=colours[k], label=f"instance {k}" if not many else ("instances" if k == 0 else None),
                **style)


def _mark_syncs(ax, epochs: np.ndarray, label: str | None) -> None:
    if len(epochs) <= SYNC_LINES:
        for i, e in enumerate(epochs):
            ax.axvline(e, color="0.6", linestyle=":", linewidth=0.9, label=label if i == 0 else None)
    else:
        ax.plot(epochs, np.zeros_like(epochs), "|", color="0.4", markersize=8,
                transform=ax.get_xaxis_transform(), label=label)


def plot(result) -> Figure:
    """Training loss per instance (log scale) with the global loss at each sync point, above the
    validation accuracy per instance and of the ensemble when the run had validation data.

    Parameters
    ----------
    result : TrainResult

    Returns
    -------
    Figure
        Two axes (loss, validation accuracy), or one when the run had no validation data.
    """
    history, config = result.history, result.config
    losses = history.losses
    n, epochs = losses.shape
    sync_epochs = np.asarray(history.sync_epochs)
    has_val = np.size(history.val_accuracy) > 0
    fig = new_figure(11, 7.5 if has_val else 4.5)
    axes = fig.subplots(2 if has_val else 1, 1, sharex=True, squeeze=False)[:, 0]
    colours, mappable = _instance_colours(n)
    many = mappable is not None
    sync_label = ("round ends (sync='none': nothing exchanged)" if config["sync"] == "none"
                  else f"sync points ({config['sync']})")

    ax = axes[0]
    x = np.arange(1, epochs + 1)
    _per_instance(ax, x, losses, colours, many, linewidth=0.9, alpha=0.85)
    ax.plot(sync_epochs, history.global_loss, "o-", color="black", markersize=4, linewidth=1.2,
            label="global loss (mean over instances)")
    _mark_syncs(ax, sync_epochs, sync_label)
    ax.set_yscale("log")
    ax.set_ylabel("training loss (nats: cross-entropy + L2)")
    ax.set_title("Training loss")

    if has_val:
        ax = axes[1]
        _per_instance(ax, sync_epochs, np.asarray(history.val_accuracy).T, colours, many, marker="o",
                      markersize=3, linewidth=0.8, alpha=0.8)
        ax.plot(sync_epochs, history.ensemble_val_accuracy, "s-", color="black", markersize=5, linewidth=1.6,
                label="ensemble (mean probability)")
        _mark_syncs(ax, sync_epochs, None)
        ax.set_ylabel("validation accuracy (fraction correct)")
        ax.set_title("Validation accuracy at sync points")
    for ax in axes:
        ax.grid(alpha=0.3, which="both" if ax is axes[0] else "major")
        # beside the axes: a legend inside would cover curves somewhere in a long run
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axes[-1].set_xlabel("epoch")
    axes[-1].set_xlim(0, epochs)
    if many:
        fig.colorbar(mappable, ax=list(axes), label="instance index")
    fig.suptitle(f"Convergence: {run_label(result)}")
    return fig
