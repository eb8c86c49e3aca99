"""The figures of the findings report (``fastffnn.reports.findings``): functions of the records of
``fastffnn.reports.experiments``, each returning a matplotlib ``Figure``.  Error bars and bands
are 95 % confidence intervals over seeds (``stats``)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from . import new_figure


def stats(values) -> tuple:
    """(mean, half-width of the 95 % t interval, count) of the values that are not None; the
    half-width is nan for fewer than two."""
    from scipy.stats import t
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    half = float(t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(v.mean()), half, int(v.size)


def _errorbar(ax, xs, groups, **kw) -> tuple:
    # the means with their 95 % intervals; returns the means
    m, h, _ = zip(*(stats(g) for g in groups))
    ax.errorbar(xs, m, yerr=np.nan_to_num(h), capsize=3, marker="o", ms=4, **kw)
    return m


def gil(records: list, configs: list, cores: int) -> Figure:
    """Throughput and speedup over serial (same kernel, same N) against instances, per
    (backend, kernel) of ``configs``."""
    fig = new_figure(11, 4.5)
    ax, bx = fig.subplots(1, 2)
    ns = sorted({r["instances"] for r in records})
    for c, (backend, kernel) in enumerate(configs):
        own = [[r["throughput"] for r in records if (r["backend"], r["kernel"], r["instances"]) == (backend, kernel, n)]
               for n in ns]
        _errorbar(ax, ns, own, label=f"{backend} / {kernel}", color=f"C{c}")
        if backend != "serial":
            base = [[r["throughput"] for r in records if (r["backend"], r["kernel"], r["instances"]) == ("serial", kernel, n)]
                    for n in ns]
            _errorbar(bx, ns, [np.array(o) / np.array(b) for o, b in zip(own, base)], label=f"{backend} / {kernel}",
                      color=f"C{c}")
    ax.set_yscale("log")
    ax.set_ylabel("throughput (instance-epochs per second)")
    bx.axhline(cores, color="0.5", ls=":", label=f"{cores} cores")
    bx.axhline(1.0, color="0.5", lw=0.8)
    bx.set_ylabel("speedup over serial with the same kernel")
    for a in (ax, bx):
        a.set_xscale("log", base=2)
        a.set_xticks(ns, [str(n) for n in ns])
        a.set_xlabel("instances N")
        a.grid(alpha=0.3)
    ax.legend(fontsize="small")
    bx.legend(fontsize="small")
    fig.suptitle("Question 1: the GIL. Throughput and speedup against instances (95 % intervals over repeats)",
                 fontsize="medium")
    return fig


def syncing(records: list, strategies: list, inits: list, single: dict, everies: list) -> Figure:
    """Test accuracy of the instances and epochs to the target loss against ``sync_every``, one
    line per synced strategy, one column per init; independent instances and one network as bands."""
    fig = new_figure(12, 8)
    axes = fig.subplots(2, len(inits), sharex=True, sharey="row")
    accuracies, floors = [[] for _ in inits], []     # per init: (sync_every, mean accuracies, colour) per line
    for col, init in enumerate(inits):
        base = [r for r in records if r["strategy"] == "none" and r["init"] == init]
        for row, key in enumerate(("test_accuracy", "epochs_to_target")):
            ax = axes[row, col]
            independent = stats([r[key] for r in base])
            for label, (m, h, _), color in (("independent (no sync)", independent, "0.3"),
                                            ("one network, best lr", stats(single[key]), "0.6")):
                ax.axhline(m, color=color, ls="--", lw=1, label=label)
                if np.isfinite(h):
                    ax.axhspan(m - h, m + h, color=color, alpha=0.12)
            for c, label in enumerate(strategies):
                groups = [[r[key] for r in records if (r["strategy"], r["init"], r["sync_every"]) == (label, init, e)]
                          for e in everies]
                means = _errorbar(ax, everies, groups, label=label, color=f"C{c}")
                if row == 0:
                    accuracies[col].append((everies, means, f"C{c}"))
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"{init} starts")
                floors.append(independent[0] - ACCURACY_SPAN)
        axes[0, col].set_ylabel("test accuracy, mean of the instances")
        axes[1, col].set_ylabel("epochs until the mean training loss reaches the target\n(runs that reached it)")
        axes[1, col].set_xlabel("sync_every (epochs)")
    _clip_accuracy(axes[0], accuracies, min(floors))
    axes[0, -1].legend(fontsize="x-small", loc="lower right")
    fig.suptitle("Question 2: does syncing help? (95 % intervals over seeds)", fontsize="medium")
    return fig


ACCURACY_SPAN = 0.1     # the accuracy axes reach this far below independent instances' mean


def _clip_accuracy(axes, accuracies: list, floor: float) -> None:
    # the accuracy axes from floor up, so that the configurations near the baselines can be told
    # apart; a mean below it (explore's diverged runs) is marked at the bottom edge with its value
    for ax in axes:
        ax.set_ylim(bottom=floor)
    for ax, lines in zip(axes, accuracies):
        for xs, means, color in lines:
            for x, m in zip(xs, means):
                if np.isfinite(m) and m < floor:
                    ax.plot([x], [floor], marker="v", ms=8, color=color, clip_on=False, zorder=5)
                    ax.annotate(f"{m:.2f}", (x, floor), xytext=(6, 4), textcoords="offset points", color=color,
                                fontsize="x-small")


def curves(groups: dict, target: float | None, title: str, ylabel: str = "mean training loss of the instances") -> Figure:
    """Mean curve over seeds per label of ``groups`` ({label: [curve per seed]}), log scale."""
    fig = new_figure(9, 5.5)
    ax = fig.add_subplot()
    for c, (label, runs) in enumerate(groups.items()):
        if not runs:
            continue
        runs = np.array(runs)
        ax.plot(np.arange(1, runs.shape[1] + 1), runs.mean(axis=0), color=f"C{c % 10}", lw=1.2,
                ls="-" if c < 10 else "--", label=label)
    if target is not None:
        ax.axhline(target, color="0.4", ls=":", label=f"target {target:g}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncols=2)
    fig.suptitle(title, fontsize="medium")
    return fig


def penalty(records: list, penalties: list, target: float) -> Figure:
    """The case-3 penalty ∂: training loss curves of the median instance (an instance that
    diverges would dominate a mean), and test log loss and accuracy with 95 % intervals, per ∂."""
    fig = new_figure(13, 4.5)
    ax, bx, cx = fig.subplots(1, 3)
    for c, d in enumerate(penalties):
        runs = np.array([r["median_curve"] for r in records if r["penalty"] == d and not r["failed"]])
        ax.plot(np.arange(1, runs.shape[1] + 1), np.median(runs, axis=0), color=f"C{c}", label=f"∂ = {d:g}")
    ax.axhline(target, color="0.4", ls=":", label=f"target {target:g}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss of the median instance\n(median over seeds)")
    ax.legend(fontsize="small")
    for axis, key, label in ((bx, "test_log_loss", "test log loss, mean of the instances"),
                             (cx, "test_accuracy", "test accuracy, mean of the instances")):
        _errorbar(axis, penalties, [[r[key] for r in records if r["penalty"] == d] for d in penalties], color="C0")
        axis.set_xscale("log", base=2)
        axis.set_xticks(penalties, [f"{d:g}" for d in penalties])
        axis.set_xlabel("penalty ∂ (output sigmoid(∂ z))")
        axis.set_ylabel(label)
    for a in (ax, bx, cx):
        a.grid(alpha=0.3)
    fig.suptitle("Question 3: the report's case 3, sharpening the cross-entropy by ∂ (95 % intervals over seeds)",
                 fontsize="medium")
    return fig


def pairs(records: list, strategies: list) -> Figure:
    """Weight distance of every pair of instances before (hollow) and after (filled) alignment
    against their test prediction agreement, coloured by strategy, all seeds."""
    fig = new_figure(9, 6)
    ax = fig.add_subplot()
    for c, label in enumerate(strategies):
        runs = [r["pairs"] for r in records if r["strategy"] == label and "pairs" in r]
        before = np.concatenate([p["before"] for p in runs])
        after = np.concatenate([p["after"] for p in runs])
        agreement = np.concatenate([p["agreement"] for p in runs])
        ax.scatter(before, agreement, facecolors="none", edgecolors=f"C{c}", s=18, alpha=0.6)
        ax.scatter(after, agreement, color=f"C{c}", s=14, marker="D", alpha=0.8,
                   label=f"{'independent (no sync)' if label == 'none' else label}: after (filled) / before (hollow) "
                         f"alignment")
    ax.set_xlabel("L2 distance of the flat parameters of a pair, all layers")
    ax.set_ylabel("test prediction agreement of the pair (fraction of samples)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    fig.suptitle("Question 4: different weights, same predictions? Every pair of instances, all seeds",
                 fontsize="medium")
    return fig


def overfitting(records: list, settings: list) -> Figure:
    """Test log loss (with the training loss dotted) and test accuracy against epochs per setting,
    mean over seeds with 95 % bands."""
    fig = new_figure(13, 5)
    ax, bx = fig.subplots(1, 2)
    for c, label in enumerate(settings):
        runs = [r for r in records if r["setting"] == label]
        epochs = runs[0]["epochs"]
        for axis, key in ((ax, "test_loss"), (bx, "test_accuracy")):
            m, h, _ = zip(*(stats(v) for v in zip(*(r[key] for r in runs))))
            m, h = np.array(m), np.nan_to_num(np.array(h))
            axis.plot(epochs, m, color=f"C{c}", label=label)
            axis.fill_between(epochs, m - h, m + h, color=f"C{c}", alpha=0.15)
        ax.plot(epochs, np.mean([r["train_loss"] for r in runs], axis=0), color=f"C{c}", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_ylabel("test log loss (solid); training loss (dotted)")
    bx.set_ylabel("test accuracy")
    for a in (ax, bx):
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    bx.legend(fontsize="x-small", loc="lower right")
    fig.suptitle("Question 5: epochs and over-fitting, 30-32-32-1 ReLU, full batch (95 % bands over seeds)",
                 fontsize="medium")
    return fig
