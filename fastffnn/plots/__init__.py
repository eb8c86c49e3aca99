"""Figures of a training run: one module per kind, each a function of a ``TrainResult`` that returns
a matplotlib ``Figure`` (object-oriented API only: no pyplot, no global state), and the helpers that
name and save them.

``KINDS`` is the one registry of plot kinds (name -> function); ``filename``, ``save`` and ``draw``
read it.  Saved figures are named ``<kind>_<backend>_<sync>_i<instances>_e<epochs>_n<samples>.png``.

>>> import fastffnn.plots as fp
>>> fig = fp.KINDS["convergence"](result)          # or fp.convergence.plot(result)
>>> fp.save(fig, "convergence", result)            # Plots/convergence_threads_average_i8_e1000_n455.png
>>> drawn = fp.draw(result, X=X_test, y=y_test)    # every kind this result can show
>>> drawn.paths, drawn.skipped
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

DPI = 120                   # every saved figure; sizes below are in inches
WEIGHT_CMAP = "RdBu_r"      # weights: blue negative, white zero, red positive


# The helpers the kinds share.  They stand before the kinds' imports below, which use them.

def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout Figure on its own Agg canvas (pyplot's global backend untouched)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def run_label(result) -> str:
    """One line naming the run, for figure titles."""
    c = result.config
    sync = "no sync" if c["sync"] == "none" else f"sync={c['sync']} every {c['sync_every']} epochs"
    return (f"{c['instances']} instances, {c['epochs']} epochs, {sync}, backend={c['backend']}, "
            f"n={c['n_samples']}")


def symmetric_norm(*arrays: np.ndarray) -> Normalize:
    """Colour limits (-m, m), m the largest |value| of ``arrays``, so that white means zero."""
    m = max((float(np.max(np.abs(a))) for a in arrays if np.size(a)), default=0.0)
    m = m if m > 0 else 1.0
    return Normalize(-m, m)


def check_instance(result, instance, name: str, caller: str) -> int:
    """``instance`` as an index into ``result.ensemble``, or the library's ValueError."""
    n = len(result.ensemble)
    if isinstance(instance, bool) or not isinstance(instance, (int, np.integer)) or not 0 <= instance < n:
        raise ValueError(f"The '{name}' parameter of {caller} must be an int in the range [0, {n - 1}] "
                         f"(the result has {n} instances). Got {instance!r} instead.")
    return int(instance)


from . import alignment, convergence, heatmap, network     # noqa: E402  (they import the helpers)

KINDS = {
    "convergence": convergence.plot,
    "network": network.plot,
    "heatmap": heatmap.plot,
    "alignment": alignment.plot,
}


def _check_kind(kind: str, caller: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"The 'kind' parameter of {caller} must be a str among {sorted(KINDS)}. "
                         f"Got {kind!r} instead.")
    return kind


def filename(kind: str, result) -> str:
    """``<kind>_<backend>_<sync>_i<instances>_e<epochs>_n<samples>.png`` from ``result.config``."""
    c = result.config
    return (f"{_check_kind(kind, 'filename')}_{c['backend']}_{c['sync']}_i{c['instances']}_e{c['epochs']}"
            f"_n{c['n_samples']}.png")


def save(figure: Figure, kind: str, result, plots_dir: str | Path = "Plots") -> Path:
    """Write ``figure`` as ``plots_dir/filename(kind, result)`` at ``DPI`` (creating the folder);
    returns the path."""
    path = Path(plots_dir) / filename(kind, result)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def unavailable(kind: str, result, X=None) -> str | None:
    """Why ``kind`` cannot be drawn for ``result`` (and ``X``), or None when it can."""
    n = len(result.ensemble)
    if kind == "scaling":       # registered with the benchmark figures: a function of benchmark rows
        return "it draws benchmark results (fastffnn.reports.scaling), not a training run"
    if kind == "network" and not result.history.snapshots:
        return "the result has no weight snapshots; train with snapshots=[epoch, ...]"
    if kind in ("heatmap", "alignment") and n < 2:
        return f"it compares instances and the result has {n}"
    if kind == "alignment" and X is None:
        return "it measures prediction agreement on data; pass X (and y)"
    return None


class Drawn(NamedTuple):
    """What ``draw`` did: the files it wrote, and each kind it skipped with the reason."""

    paths: list
    skipped: dict


def draw(result, plots_dir: str | Path = "Plots", kinds=None, X=None, y=None) -> Drawn:
    """Draw and save every applicable kind of figure of ``result``.

    Parameters
    ----------
    result : TrainResult
    plots_dir : str or Path
        Folder of the files (created); names as ``filename``.
    kinds : sequence of str, optional
        Kinds to draw (keys of ``KINDS``).  None draws every kind the result can show and skips the
        others (``network`` without snapshots, ``alignment`` without ``X``, comparisons of a single
        instance); a kind named here that cannot be drawn raises ValueError with the reason.
    X, y : array-like, optional
        Data of the ``alignment`` figure (prediction agreement; y colours pairs by accuracy).

    Returns
    -------
    Drawn
        ``paths`` (list of Path, in ``KINDS`` order) and ``skipped`` ({kind: reason}).
    """
    explicit = kinds is not None
    kinds = list(KINDS) if kinds is None else [_check_kind(k, "draw") for k in kinds]
    paths, skipped = [], {}
    for kind in kinds:
        reason = unavailable(kind, result, X)
        if reason is not None:
            if explicit:
                raise ValueError(f"Cannot draw {kind!r}: {reason}.")
            skipped[kind] = reason
            continue
        options = {"X": X, "y": y} if kind == "alignment" else {}
        paths.append(save(KINDS[kind](result, **options), kind, result, plots_dir))
    return Drawn(paths, skipped)
