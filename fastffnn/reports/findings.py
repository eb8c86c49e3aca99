"""The findings report: ``fastffnn report`` runs the experiments of
``fastffnn.reports.experiments`` and writes ``REPORT.md`` with its figures in ``Plots/``.

    fastffnn report                 # the full run (10 seeds; about half an hour on 2 cores)
    fastffnn report --quick         # the same questions, small (3 seeds, short runs): a check

Every number, table, figure and answer comes from the run that wrote the file: the answers are
sentences filled in from the measured means and 95 % intervals, with their wording (helps, hurts,
no difference) decided by the intervals.  ``--json`` also writes the records themselves.
"""
from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from time import perf_counter

import numpy as np

from .. import plots
from ..backends.base import cpu_count
from ..plots import findings as figures
from ..plots.findings import stats
from . import experiments as ex
from .scaling import _format

LAYERS = {"last": "the output layer", "all": "all layers"}
FIGURES = ("gil", "syncing", "syncing_curves", "penalty", "pairs", "overfitting")


# --- numbers as text --------------------------------------------------------------------------

def ci(values, spec: str = ".4f", pct: bool = False) -> str:
    """"mean ± half" of the 95 % interval (just the mean for a single value; "-" for none)."""
    m, h, n = stats(values)
    if n == 0:
        return "-"
    scale, unit = (100.0, " %") if pct else (1.0, "")
    return f"{format(m * scale, spec)}{unit}" if not np.isfinite(h) else \
        f"{format(m * scale, spec)} ± {format(h * scale, spec)}{unit}"


def reached(values, total: int, spec: str = ".0f") -> str:
    """Epochs to the target over the runs that reached it, and how many did."""
    n = sum(v is not None for v in values)
    return "not reached" if n == 0 else f"{ci(values, spec)} ({n}/{total})"


def diff(a: list, b: list) -> tuple:
    """(mean, half, sign) of the paired differences a - b over seeds: sign +1 or -1 when the 95 %
    interval excludes 0, else 0."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    m, h, n = stats([x - y for x, y in pairs])
    sign = 0 if n < 2 or not np.isfinite(h) or abs(m) <= h else int(np.sign(m))
    return m, h, sign


def names(items: list) -> str:
    items = list(items)
    if not items:
        return "none"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def md_table(header: list, rows: list) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
                     + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _select(records, **match) -> list:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


# --- 1. the GIL -------------------------------------------------------------------------------

def q1(gil: list, cold: list, s: ex.Settings) -> tuple:
    ns, top = sorted({r["instances"] for r in gil}), max(r["instances"] for r in gil)
    cores = cpu_count()

    def values(backend, kernel, n, key="throughput"):
        return [r[key] for r in sorted(_select(gil, backend=backend, kernel=kernel, instances=n),
                                       key=lambda r: r["repeat"])]

    def speedup(backend, kernel, n):
        return [a / b for a, b in zip(values(backend, kernel, n), values("serial", kernel, n))]

    rows = []
    for backend, kernel in [("serial", k) for k in ("numpy", "numba-gil", "numba")] + list(ex.GIL_CONFIGS):
        rows.append([f"{backend} / {kernel}", *[ci(values(backend, kernel, n), ",.0f") for n in ns],
                     "1" if backend == "serial" else ci(speedup(backend, kernel, top), ".2f")])
    table = md_table(["backend / kernel", *[f"N = {n}" for n in ns], f"speedup at N = {top}"], rows)
    labels = list(dict.fromkeys(r["label"] for r in cold))
    table += "\n\nA whole run (wall time around `train`, compilation excluded by warming first):\n\n" + md_table(
        ["run of " + f"{cold[0]['instances']} instances x {s.gil_epochs} epochs", "seconds"],
        [[label, ci([r["seconds"] for r in cold if r["label"] == label], ".3f")] for label in labels])
    sp = {(b, k): stats(speedup(b, k, top))[0] for b, k in ex.GIL_CONFIGS}
    t_nogil, t_gil, t_np = sp["threads", "numba"], sp["threads", "numba-gil"], sp["threads", "numpy"]
    others = min(sp["processes", "numba"], sp["prange", "numba"])
    seconds = {label: stats([r["seconds"] for r in cold if r["label"] == label])[0] for label in labels}
    fresh, warm, threads = (seconds[label] for label in labels)
    answer = (f"At N = {top} on {cores} cores, threads with the nogil numba kernel run {t_nogil:.2f}x as fast as serial "
              f"with the same kernel, while the kernel that holds the GIL gets {t_gil:.2f}x and the numpy kernel "
              f"{t_np:.2f}x: " + ("the GIL, not threading, serialised the report's threads, and "
                                  if t_nogil > 1.3 * max(t_gil, 1.0) else "here the GIL costs little, and ")
              + f"processes ({sp['processes', 'numba']:.2f}x) and prange ({sp['prange', 'numba']:.2f}x) "
              + ("scale like nogil threads. " if others > 0.75 * t_nogil else "scale less well than nogil threads. ")
              + f"The report saw threads beat processes because its processes were fresh interpreters for every "
              f"run: a run of its size takes {fresh:.2f} s with fresh worker processes, against {warm:.3f} s on a "
              f"warm pool and {threads:.3f} s on threads with the numpy kernel, so "
              + ("start-up, not computation, decided its comparison." if fresh > 2 * threads
                 else "start-up alone does not explain it here."))
    method = (f"Throughput is instance-epochs per second of `train`'s wall time (compilation excluded), of "
              f"{'-'.join(map(str, (30, *s.hidden, 1)))} ReLU networks on seed 0's split (455 samples, full batch), "
              f"`sync=\"average\"` every 10 epochs, {s.gil_epochs} epochs, N ∈ {{{', '.join(map(str, ns))}}}, "
              f"{s.gil_repeats} repeats interleaved across configurations. Speedup is paired by repeat: a "
              f"configuration's throughput over serial's with the same kernel and N. The whole-run times use "
              f"`fastffnn.shutdown()` before each fresh-worker run, {s.cold_repeats} repeats.")
    return method, table, answer


# --- 2. syncing -------------------------------------------------------------------------------

def single_network(records: list) -> dict:
    """One network with the best single learning rate: of the independent instances (each trains
    alone under sync="none"), the one whose learning rate has the lowest mean final training loss
    over seeds -- chosen on training data only."""
    base = sorted(_select(records, strategy="none", init="independent"), key=lambda r: r["seed"])
    k = int(np.argmin(np.mean([r["instance_final_loss"] for r in base], axis=0)))
    return {"instance": k, "test_accuracy": [r["instance_accuracy"][k] for r in base],
            "ensemble_accuracy": [r["instance_accuracy"][k] for r in base],
            "epochs_to_target": [r["instance_epochs_to_target"][k] for r in base],
            "curves": [r["instance_curves"][k] for r in base]}


def _by_seed(records, key, **match) -> list:
    return [r[key] for r in sorted(_select(records, **match), key=lambda r: r["seed"])]


def censored(values: list, epochs: int) -> list:
    """Epochs to the target with a run that never reached it counted as ``epochs + 1``, for
    paired comparisons (a difference involving such a run is a bound)."""
    return [epochs + 1 if v is None else v for v in values]


def number(value: float, spec: str, missing: str = "not reached") -> str:
    return missing if not np.isfinite(value) else format(value, spec)


def q2(records: list, s: ex.Settings) -> tuple:
    single = single_network(records)
    strategies = [c[0] for c in ex.SYNCED]
    n = s.seeds
    tables = []
    for every in s.sync_every:
        rows = [["one network, lr %.3g" % s.lrs[single["instance"]], "-", reached(single["epochs_to_target"], n),
                 reached([None if e is None else e for e in single["epochs_to_target"]], n),
                 ci(single["test_accuracy"], ".2f", True), "-", "-"]]
        for init in ex.INITS:
            none_acc = _by_seed(records, "test_accuracy", strategy="none", init=init)
            for label in ["none", *strategies]:
                match = dict(strategy=label, init=init, sync_every=None if label == "none" else every)
                ep = _by_seed(records, "epochs_to_target", **match)
                acc = _by_seed(records, "test_accuracy", **match)
                m, h, _ = diff(acc, none_acc)
                rows.append([label if label != "none" else "independent (no sync)", init, reached(ep, n),
                             reached([None if e is None else e * s.instances for e in ep], n), ci(acc, ".2f", True),
                             ci(_by_seed(records, "ensemble_accuracy", **match), ".2f", True),
                             "-" if label == "none" else f"{100 * m:+.2f} ± {100 * h:.2f}"])
        tables.append(f"**sync_every = {every}**\n\n" + md_table(
            ["strategy", "init", f"epochs to loss {s.target_loss:g}", "instance-epochs to it", "instance test acc",
             "ensemble test acc", "Δ instance acc vs independent (points)"], rows))
    # the verdicts: paired over seeds against independent instances of the same init
    verdicts = []
    for every in s.sync_every:
        for init in ex.INITS:
            none = dict(strategy="none", init=init)
            for label in strategies:
                match = dict(strategy=label, init=init, sync_every=every)
                acc = diff(_by_seed(records, "test_accuracy", **match), _by_seed(records, "test_accuracy", **none))
                ep = diff(censored(_by_seed(records, "epochs_to_target", **match), s.epochs),
                          censored(_by_seed(records, "epochs_to_target", **none), s.epochs))
                verdicts.append((f"{label}, {init}, every {every}", acc, ep,
                                 stats(_by_seed(records, "test_accuracy", **match))[0]))
    helped = [v[0] for v in verdicts if v[1][2] > 0]
    hurt = [v[0] for v in verdicts if v[1][2] < 0]
    faster = [v for v in verdicts if v[2][2] < 0]
    best = max(verdicts, key=lambda v: v[3])
    none_acc = stats(_by_seed(records, "test_accuracy", strategy="none", init="independent"))[0]
    none_ep = stats(_by_seed(records, "epochs_to_target", strategy="none", init="independent"))[0]
    case1 = [v for v in verdicts if v[0].startswith("average (last), independent")]
    case1_text = "; ".join(f"{100 * v[1][0]:+.2f} ± {100 * v[1][1]:.2f} points at every {v[0].rsplit(' ', 1)[1]}"
                           for v in case1)
    case1_helps = any(v[1][2] > 0 for v in case1)
    answer = (f"Against independent instances (paired over {n} seeds, 95 % intervals), test accuracy rose with "
              f"{len(helped)} of {len(verdicts)} synced configurations ({names(helped[:4])}"
              f"{' and others' if len(helped) > 4 else ''}) and fell with {len(hurt)} ({names(hurt[:4])}"
              f"{' and others' if len(hurt) > 4 else ''}); the most accurate, {best[0]}, reached "
              f"{100 * best[3]:.2f} % against {100 * none_acc:.2f} % for independent instances and "
              f"{100 * stats(single['test_accuracy'])[0]:.2f} % for one network. "
              f"{len(faster)} configurations reached the mean training loss {s.target_loss:g} in significantly fewer "
              f"epochs than independent instances ({number(none_ep, '.0f')})"
              + (f", fastest {min(faster, key=lambda v: v[2][0])[0]}" if faster else "")
              + f"; the report's case 1 (averaging the output layer of independent starts) changed accuracy by "
              + case1_text + (" (significantly)" if case1_helps else
                              ", no gain, since the hidden units it feeds are ordered differently in every instance "
                              "(question 4)") + ".")
    method = (f"{s.instances} instances of {'-'.join(map(str, (30, *s.hidden, 1)))} ReLU, full batch, momentum 0.9, "
              f"L2 1e-3, learning rates log-spaced {s.lr_range[0]:g}-{s.lr_range[1]:g} (one per instance), "
              f"{s.epochs} epochs, threads backend, seeds 0-{n - 1} (each its own split and starts). Strategies: "
              f"{names(f'`{c[1]}` over {LAYERS[c[2]]}' + (' with explore' if c[3] else '') for c in ex.SYNCED)}; "
              f"each from independent and from shared starts (`init`), at `sync_every` ∈ "
              f"{{{', '.join(map(str, s.sync_every))}}}. \"Epochs to loss\" is the first epoch at which the mean "
              f"training loss of the instances is at most {s.target_loss:g}, over the runs that reached it "
              f"(count in brackets); instance-epochs multiply by N, one network's by 1. In the paired comparisons a run "
              f"that never reached it counts as {s.epochs + 1} epochs. One network is the "
              f"instance whose learning rate has the lowest mean final training loss under `sync=\"none\"` "
              f"(each such instance trains alone). The sync strategies judge instances on the training data; "
              f"the test split only measures.")
    return method, "\n\n".join(tables), answer, single


# --- 3. the penalty ---------------------------------------------------------------------------

def q3(records: list, s: ex.Settings) -> tuple:
    n = s.seeds
    keys = ("median_epochs_to_target", "median_final_loss", "diverged", "test_accuracy", "test_log_loss",
            "ensemble_accuracy")
    col = {d: {k: _by_seed(records, k, penalty=d) for k in keys} for d in s.penalties}
    one = col[1.0]
    rows = []
    for d in s.penalties:
        c = col[d]
        m, h, _ = diff(c["test_log_loss"], one["test_log_loss"])
        rows.append([f"{d:g}", reached(c["median_epochs_to_target"], n), ci(c["median_final_loss"]),
                     f"{sum(c['diverged'])}/{n * s.instances}", ci(c["test_log_loss"]),
                     "-" if d == 1.0 else f"{m:+.4f} ± {h:.4f}", ci(c["test_accuracy"], ".2f", True),
                     ci(c["ensemble_accuracy"], ".2f", True)])
    table = md_table(["∂", f"epochs to loss {s.target_loss:g} (median instance)", "median final training loss",
                      "instances diverged", "test log loss", "Δ log loss vs ∂ = 1", "instance test acc",
                      "ensemble test acc"], rows)
    mean = {d: {k: stats(v)[0] for k, v in col[d].items()} for d in s.penalties}
    ep = {d: stats(censored(col[d]["median_epochs_to_target"], s.epochs))[0] for d in s.penalties}
    lo, hi = s.penalties[0], s.penalties[-1]
    best_ll = min(s.penalties, key=lambda d: mean[d]["test_log_loss"])
    ll_sig = {d: diff(col[d]["test_log_loss"], one["test_log_loss"])[2] for d in s.penalties if d != 1.0}
    acc_sig = [d for d in s.penalties if d != 1.0 and diff(col[d]["test_accuracy"], one["test_accuracy"])[2] != 0]
    accuracies = ", ".join(f"{100 * mean[d]['test_accuracy']:.2f} %" for d in s.penalties)
    faster = ep[hi] < ep[lo]
    diverged = [f"{d:g}" for d in s.penalties if sum(col[d]["diverged"])]
    answer = (f"∂ multiplies the output logits, so it acts as a larger step on the output layer: from ∂ = {lo:g} to "
              f"{hi:g} the median instance reaches the training loss {s.target_loss:g} in "
              f"{number(ep[lo], '.0f', f'more than {s.epochs}')} and {number(ep[hi], '.0f')} epochs "
              f"(a run that never reached it counted as {s.epochs + 1}), "
              + (f"instances diverge at ∂ = {names(diverged)}, " if diverged else "no instance diverges, ")
              + f"and the test log loss goes from {mean[lo]['test_log_loss']:.4f} to {mean[hi]['test_log_loss']:.4f} "
              f"(significantly worse than ∂ = 1 at {names(f'{d:g}' for d, v in ll_sig.items() if v > 0)}, better at "
              f"{names(f'{d:g}' for d, v in ll_sig.items() if v < 0)}). Test accuracy ({accuracies} for "
              f"∂ = {', '.join(f'{d:g}' for d in s.penalties)}) differs significantly from ∂ = 1 at "
              f"{names(f'∂ = {d:g}' for d in acc_sig)} and the best calibrated is ∂ = {best_ll:g}: sharpening the "
              f"cross-entropy " + ("trains faster" if faster else "does not train faster")
              + (" and buys no accuracy." if not acc_sig else ", and it changes accuracy.")
              )
    method = (f"Independent instances (`sync=\"none\"`) as in question 2 ({s.instances} learning rates "
              f"{s.lr_range[0]:g}-{s.lr_range[1]:g}, {s.epochs} epochs, seeds 0-{n - 1}), each with the output "
              f"sigmoid(∂ z) (`HyperParams(penalty=∂)`), ∂ ∈ {{{', '.join(f'{d:g}' for d in s.penalties)}}}. The "
              f"training loss is the cross-entropy of sigmoid(∂ z), what the network predicts. Convergence is "
              f"read from the median instance per epoch, since the largest learning rates may diverge at large ∂ "
              f"(an instance diverged if its final training loss is above its first epoch's). Calibration is the "
              f"test log loss of each instance's probabilities (mean over instances); Δ is paired by seed.")
    return method, table, answer


# --- 4. different weights, same predictions? --------------------------------------------------

def q4(records: list, s: ex.Settings) -> tuple:
    every = s.sync_every[len(s.sync_every) // 2]
    rows, mean = [], {}
    for label in ex.PAIRS:
        runs = [r for r in _select(records, strategy=label, init="independent") if "pairs" in r]
        before = [np.mean(r["pairs"]["before"]) for r in runs]
        after = [np.mean(r["pairs"]["after"]) for r in runs]
        agreement = [np.mean(r["pairs"]["agreement"]) for r in runs]
        share = [1 - a / b for a, b in zip(after, before) if b > 0]
        mean[label] = {k: stats(v)[0] for k, v in (("before", before), ("after", after), ("agreement", agreement),
                                                   ("share", share))}
        rows.append([label if label != "none" else "independent (no sync)", ci(before, ".3f"), ci(after, ".3f"),
                     ci(share, ".1f", True), ci(agreement, ".2f", True)])
    table = md_table(["strategy (independent starts)", "distance before alignment", "after", "share removed by alignment",
                      "test prediction agreement"], rows)
    m = mean
    same = m["none"]["agreement"] > 0.95
    answer = (f"Independently started instances end {m['none']['before']:.2f} apart in weights and "
              f"{m['none']['after']:.2f} after aligning their hidden units ({100 * m['none']['share']:.0f} % of the "
              f"distance is only the order of the units), yet agree on {100 * m['none']['agreement']:.1f} % of test "
              f"predictions: " + ("different weights give the same predictions, as the report expected. "
                                  if same else "their predictions differ as much as their weights. ")
              + f"{every - 1} epochs after an average of every layer they are {m['average (all)']['before']:.2f} apart "
              f"(agreement {100 * m['average (all)']['agreement']:.1f} %), after an aligned average "
              f"{m['align (all)']['before']:.2f}, while averaging the output layer alone leaves them "
              f"{m['average (last)']['before']:.2f} apart: "
              + ("their hidden layers never meet, so the output layer they share is averaged over units that mean "
                 "different things." if m["average (last)"]["before"] > 0.5 * m["none"]["before"]
                 else "even the output layer's average pulls their hidden layers together."))
    method = (f"Every pair of the {s.instances} instances of question 2's runs from independent starts, all seeds, "
              f"one epoch before the end (the last epoch is a sync point, after which averaged layers are "
              f"equal; synced runs at `sync_every` = {every}, so {every - 1} epochs after their last sync): the L2 "
              f"distance of their flat parameters (all layers, weights and biases) before and after permuting the "
              f"second's hidden units to match the first's (`fastffnn.align`, weight matching), and the share of "
              f"test samples on which both predict the same class. Means per run, then mean ± 95 % interval over "
              f"seeds.")
    return method, table, answer


# --- 5. epochs and over-fitting ---------------------------------------------------------------

def q5(records: list, s: ex.Settings) -> tuple:
    rows, mean = [], {}
    for label, *_ in ex.OVERFIT:
        runs = _select(records, setting=label)
        epochs = runs[0]["epochs"]
        best = [epochs[int(np.argmin(r["test_loss"]))] for r in runs]
        at_best = [min(r["test_loss"]) for r in runs]
        end = [r["test_loss"][-1] for r in runs]
        acc_best = [r["test_accuracy"][int(np.argmin(r["test_loss"]))] for r in runs]
        acc_end = [r["test_accuracy"][-1] for r in runs]
        train_end = [r["train_loss"][-1] for r in runs]
        mean[label] = {k: stats(v)[0] for k, v in (("best", best), ("at_best", at_best), ("end", end),
                                                   ("acc_end", acc_end), ("train_end", train_end))}
        rows.append([label, ci(best, ".0f"), ci(at_best), ci(end), ci(acc_best, ".2f", True),
                     ci(acc_end, ".2f", True), ci(train_end)])
    table = md_table(["setting", "epoch of the lowest test loss", "lowest test loss", f"test loss at {s.overfit_epochs}",
                      "test acc there", f"test acc at {s.overfit_epochs}", f"training loss at {s.overfit_epochs}"], rows)
    raw, std, fast, l2 = (mean[label] for label, *_ in ex.OVERFIT)
    E = s.overfit_epochs

    def after_best(m) -> str:
        ratio = m["end"] / m["at_best"]
        return (f"{ratio:.1f}x as high by epoch {E}" if ratio > 1.1 else f"within 10 % of it at epoch {E}")
    answer = (f"With the report's own settings the test loss is lowest at epoch {raw['best']:.0f} on average "
              f"({raw['at_best']:.3f}) and {after_best(raw)} (accuracy {100 * raw['acc_end']:.1f} %), and on "
              f"standardised data the same settings are still at a training loss of {std['train_end']:.3f} after "
              f"{E} epochs"
              + (": a best fit at thousands of epochs is what a learning rate of 0.0005 gives, not a property of "
                 "the data. " if fast["best"] < raw["best"] / 3 else ". ")
              + f"With a learning rate that suits standardised data (0.05, momentum 0.9) the lowest test loss "
              f"comes at epoch {fast['best']:.0f} and is {after_best(fast)} while the accuracy ends at "
              f"{100 * fast['acc_end']:.1f} %"
              + (": over-fitting shows first in the calibration (log loss), not the accuracy" if
                 fast["end"] > 1.1 * fast["at_best"] else "")
              + f"; with L2 1e-3 the test loss ends at {l2['end']:.3f} (lowest {l2['at_best']:.3f}).")
    method = (f"{s.instances} independent instances of 30-{'-'.join(map(str, s.hidden))}-1 ReLU, full batch, "
              f"{E} epochs, seeds 0-{s.seeds - 1}; the test loss (log loss) and accuracy from weight snapshots every "
              f"{s.overfit_every} epochs, means over instances. Settings: "
              + "; ".join(f"**{label}**: {'standardised' if scale else 'raw'} features, lr {hp.lr:g}, momentum "
                          f"{hp.momentum:g}, L2 {hp.l2:g}, "
                          + ("weights and biases randn/22 (`init=` the drawn array)" if report_init
                             else "He-normal weights, zero biases")
                          for label, scale, hp, report_init in ex.OVERFIT) + ".")
    return method, table, answer


# --- the report -------------------------------------------------------------------------------

def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2 ** 30:.0f} GiB"
    packages = ", ".join(f"{p} {version(p)}" for p in ("fastffnn", "numpy", "numba", "scipy", "scikit-learn"))
    return (f"{cpu}, {cpu_count()} cores{memory}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}; {packages}")


def run(out=".", quick: bool = False, json_path=None, log=print) -> Path:
    """Run every experiment and write ``out/REPORT.md`` and its figures in ``out/Plots``; returns
    the report's path."""
    s = ex.QUICK if quick else ex.FULL
    out = Path(out)
    figures_dir = out / "Plots"
    figures_dir.mkdir(parents=True, exist_ok=True)
    t0 = perf_counter()
    log("question 1: the GIL")
    gil, cold = ex.gil(s, log), ex.cold_start(s)
    log("questions 2 and 4: syncing")
    syncing = ex.syncing(s, log)
    log("question 3: the penalty")
    penalty = ex.penalty(s, log)
    log("question 5: epochs and over-fitting")
    overfit = ex.overfitting(s, log)
    minutes = (perf_counter() - t0) / 60

    sections = [q1(gil, cold, s)]
    method, table, answer, single = q2(syncing, s)
    sections += [(method, table, answer), q3(penalty, s), q4(syncing, s), q5(overfit, s)]
    strategies = [c[0] for c in ex.SYNCED]
    every = s.sync_every[len(s.sync_every) // 2]
    curves = {"one network, best lr": single["curves"],
              **{label: [r["curve"] for r in _select(syncing, strategy=label, init="independent",
                                                       sync_every=None if label == "none" else every)]
                 for label in ["none", *strategies]}}
    drawn = {
        "gil": figures.gil(gil, [("serial", k) for k in ("numpy", "numba-gil", "numba")] + list(ex.GIL_CONFIGS),
                           cpu_count()),
        "syncing": figures.syncing(syncing, strategies, list(ex.INITS), single, list(s.sync_every)),
        "syncing_curves": figures.curves(curves, s.target_loss, f"Question 2: mean training loss over {s.seeds} seeds, "
                                         f"independent starts, sync_every = {every} (none: no sync)"),
        "penalty": figures.penalty(penalty, list(s.penalties), s.target_loss),
        "pairs": figures.pairs(syncing, list(ex.PAIRS)),
        "overfitting": figures.overfitting(overfit, [label for label, *_ in ex.OVERFIT]),
    }
    paths = {}
    for name, fig in drawn.items():
        paths[name] = figures_dir / f"findings_{name}.png"
        fig.savefig(paths[name], dpi=plots.DPI)
    report = out / "REPORT.md"
    report.write_text(_markdown(s, quick, sections, {k: p.relative_to(out).as_posix() for k, p in paths.items()},
                                minutes))
    if json_path is not None:
        records = {"settings": {k: getattr(s, k) for k in s.__dataclass_fields__}, "gil": gil, "cold_start": cold,
                   "syncing": syncing, "penalty": penalty, "overfitting": overfit}
        Path(json_path).write_text(json.dumps(records, default=_jsonable, indent=1) + "\n")
    log(f"wrote {report} and {len(paths)} figures in {figures_dir} ({minutes:.1f} min)")
    return report


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return None         # the curves: drawn, not kept
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


QUESTIONS = (
    ("1. The GIL", "How do throughput and speedup grow with the number of instances for threads with each kernel, "
                   "processes and prange, and why did the report see threads beat processes?", ("gil",)),
    ("2. Does syncing help?", "Do N instances that exchange what they learn converge faster, or predict better, than "
                              "N independent instances or one network?", ("syncing", "syncing_curves")),
    ("3. The penalty ∂ (case 3)", "What does sharpening the cross-entropy by a constant ∂ do to convergence, "
                                  "calibration and accuracy?", ("penalty",)),
    ("4. Different weights, same predictions?", "Do instances with different weights make the same predictions, and "
                                                "how much of their difference is only the order of hidden units?",
     ("pairs",)),
    ("5. Epochs and over-fitting", "Is the best fit at 3000-4000 epochs, with over-fitting past 5000, as the report "
                                   "found, and why?", ("overfitting",)),
)


def _markdown(s: ex.Settings, quick: bool, sections: list, paths: dict, minutes: float) -> str:
    command = "fastffnn report" + (" --quick" if quick else "")
    lines = ["# fastffnn findings: the 2020 report's questions, measured", "",
             f"Written by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d} in {minutes:.1f} minutes. "
             f"Machine: {machine()}. Seeds 0-{s.seeds - 1}: every mean ± is a 95 % confidence interval "
             f"(Student t) over them. Data: the embedded breast-cancer set (569 samples, 30 features), one "
             f"stratified 80/20 split per seed, standardised on its train part unless said.", ""]
    if quick:
        lines += [f"**This is the quick check ({s.seeds} seeds, short runs): too small to conclude from. "
                  f"`fastffnn report` writes the full report.**", ""]
    lines += ["## Answers", ""]
    lines += [f"{i + 1}. **{title.split('. ', 1)[1]}** {answer}" for i, ((title, _, _), (_, _, answer))
              in enumerate(zip(QUESTIONS, sections))]
    for (title, question, figs), (method, table, answer) in zip(QUESTIONS, sections):
        lines += ["", f"## {title}", "", f"*{question}*", "", f"**Method.** {method}", ""]
        lines += [f"![{name}]({paths[name]})" for name in figs]
        lines += ["", table, "", f"**Answer.** {answer}"]
    return "\n".join(lines) + "\n"
