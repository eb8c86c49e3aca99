"""The answers of the findings report, one function per question: each takes the records of
``fastffnn.reports.experiments`` and returns (method, table, answer) as Markdown text, every
number in them computed from the records.  An answer's wording -- helps, hurts, no difference --
is decided by the 95 % intervals of paired differences over seeds (``diff``)."""
from __future__ import annotations

import numpy as np

from ..backends.base import cpu_count
from ..plots.findings import stats
from . import experiments as ex

LAYERS = {"last": "the output layer", "all": "all layers"}

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


def select(records, **match) -> list:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


# --- 1. the GIL -------------------------------------------------------------------------------

def q1(gil: list, cold: list, s: ex.Settings) -> tuple:
    ns, top = sorted({r["instances"] for r in gil}), max(r["instances"] for r in gil)
    cores = cpu_count()

    def values(backend, kernel, n, key="throughput"):
        return [r[key] for r in sorted(select(gil, backend=backend, kernel=kernel, instances=n),
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
    sp = {(b, k): speedup(b, k, top) for b, k in ex.GIL_CONFIGS}
    text = {key: ci(v, ".2f") + "x" for key, v in sp.items()}
    nogil = sp["threads", "numba"]
    gil_costs = diff(nogil, sp["threads", "numba-gil"])[2] > 0 and diff(nogil, sp["threads", "numpy"])[2] > 0
    behind = [f"{b}" for b in ("processes", "prange") if diff(sp[b, "numba"], nogil)[2] < 0]
    seconds = {label: stats([r["seconds"] for r in cold if r["label"] == label])[0] for label in labels}
    fresh, warm, threads = (seconds[label] for label in labels)
    answer = (f"At N = {top} on {cores} cores, threads with the nogil numba kernel run {text['threads', 'numba']} as "
              f"fast as serial with the same kernel, while the kernel that holds the GIL gets "
              f"{text['threads', 'numba-gil']} and the numpy kernel {text['threads', 'numpy']}: "
              + ("the GIL, not threading, serialised the report's threads (paired over repeats, the nogil kernel's "
                 "speedup is the larger), and " if gil_costs else
                 "the nogil kernel's speedup is not significantly larger here, and ")
              + _scaling_clause({b: f"the {b} backend ({text[b, 'numba']})" for b in ("processes", "prange")}, behind)
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


def _scaling_clause(parts: dict, behind: list) -> str:
    # each backend in parts with its verdict against nogil threads: significantly behind, or not
    less, rest = [parts[b] for b in parts if b in behind], [parts[b] for b in parts if b not in behind]
    if not less:
        return f"{names(rest)} scale like nogil threads. "
    clause = f"{names(less)} {'scales' if len(less) == 1 else 'scale'} less well than nogil threads"
    if rest:
        clause += f", while {names(rest)} {'is' if len(rest) == 1 else 'are'} not significantly behind them"
    return clause + ". "


# --- 2. syncing -------------------------------------------------------------------------------

def single_network(records: list) -> dict:
    """One network with the best single learning rate: of the independent instances (each trains
    alone under sync="none"), the one whose learning rate has the lowest mean final training loss
    over seeds -- chosen on training data only."""
    base = sorted(select(records, strategy="none", init="independent"), key=lambda r: r["seed"])
    k = int(np.argmin(np.mean([r["instance_final_loss"] for r in base], axis=0)))
    return {"instance": k, "test_accuracy": [r["instance_accuracy"][k] for r in base],
            "ensemble_accuracy": [r["instance_accuracy"][k] for r in base],
            "epochs_to_target": [r["instance_epochs_to_target"][k] for r in base],
            "curves": [r["instance_curves"][k] for r in base]}


def _by_seed(records, key, **match) -> list:
    return [r[key] for r in sorted(select(records, **match), key=lambda r: r["seed"])]


def censored(records, epochs: int, key: str = "epochs_to_target", **match) -> list:
    """Epochs to the target by seed, with a run that never reached it counted as ``epochs + 1``,
    for paired comparisons (a difference involving such a run is a bound); None for a run that
    stopped on NaN/Inf."""
    return [None if r["failed"] else epochs + 1 if r[key] is None else r[key]
            for r in sorted(select(records, **match), key=lambda r: r["seed"])]


def failed(records, **match) -> int:
    return sum(r["failed"] for r in select(records, **match))


def epochs_text(values: list, epochs: int) -> str:
    """The mean of censored epochs to the target as words: a bound when some runs never got there."""
    values = [v for v in values if v is not None]
    if all(v > epochs for v in values):
        return f"more than {epochs}"
    return f"{'at least ' if any(v > epochs for v in values) else ''}{np.mean(values):.0f}"


def number(value: float, spec: str, missing: str = "not reached") -> str:
    return missing if not np.isfinite(value) else format(value, spec)


def q2(records: list, s: ex.Settings) -> tuple:
    single = single_network(records)
    strategies = [c[0] for c in ex.SYNCED]
    n = s.seeds
    tables = []
    for every in s.sync_every:
        rows = [["one network, lr %.3g" % s.lrs[single["instance"]], "-", reached(single["epochs_to_target"], n),
                 reached(single["epochs_to_target"], n), ci(single["test_accuracy"], ".2f", True), "-", "-", "-", "0"]]
        for init in ex.INITS:
            none_acc = _by_seed(records, "test_accuracy", strategy="none", init=init)
            none_ens = _by_seed(records, "ensemble_accuracy", strategy="none", init=init)
            for label in ["none", *strategies]:
                match = dict(strategy=label, init=init, sync_every=None if label == "none" else every)
                ep = _by_seed(records, "epochs_to_target", **match)
                acc = _by_seed(records, "test_accuracy", **match)
                m, h, _ = diff(acc, none_acc)
                me, he, _ = diff(_by_seed(records, "ensemble_accuracy", **match), none_ens)
                rows.append([label if label != "none" else "independent (no sync)", init, reached(ep, n),
                             reached([None if e is None else e * s.instances for e in ep], n), ci(acc, ".2f", True),
                             ci(_by_seed(records, "ensemble_accuracy", **match), ".2f", True),
                             "-" if label == "none" else f"{100 * m:+.2f} ± {100 * h:.2f}",
                             "-" if label == "none" else f"{100 * me:+.2f} ± {100 * he:.2f}",
                             str(failed(records, **match))])
        tables.append(f"**sync_every = {every}**\n\n" + md_table(
            ["strategy", "init", f"epochs to loss {s.target_loss:g}", "instance-epochs to it", "instance test acc",
             "ensemble test acc", "Δ instance acc vs independent (points)", "Δ ensemble acc (points)",
             "runs stopped on NaN/Inf"], rows))
    # the verdicts: paired over seeds against independent instances of the same init
    verdicts = []
    for every in s.sync_every:
        for init in ex.INITS:
            none = dict(strategy="none", init=init)
            for label in strategies:
                match = dict(strategy=label, init=init, sync_every=every)
                acc = diff(_by_seed(records, "test_accuracy", **match), _by_seed(records, "test_accuracy", **none))
                ens = diff(_by_seed(records, "ensemble_accuracy", **match),
                           _by_seed(records, "ensemble_accuracy", **none))
                ep = diff(censored(records, s.epochs, **match), censored(records, s.epochs, **none))
                verdicts.append((f"{label} [{init}, every {every}]", acc, ep,
                                 stats(_by_seed(records, "epochs_to_target", **match))[0], failed(records, **match),
                                 ens))
    helped = [v[0] for v in verdicts if v[1][2] > 0 or v[5][2] > 0]
    hurt = sum(v[1][2] < 0 for v in verdicts)
    hurt_ensemble = sum(v[5][2] < 0 for v in verdicts)
    faster = [v for v in verdicts if v[2][2] < 0]
    stopped = [f"{v[0]} ({v[4]}/{n})" for v in verdicts if v[4]]
    ensemble = stats(_by_seed(records, "ensemble_accuracy", strategy="none", init="independent"))[0]
    one = stats(single["test_accuracy"])[0]
    none_ep = stats(_by_seed(records, "epochs_to_target", strategy="none", init="independent"))[0]
    case1 = [v for v in verdicts if v[0].startswith("average (last) [independent")]
    case1_text = ", ".join(f"{100 * v[1][0]:+.2f} ± {100 * v[1][1]:.2f} points at every {v[0][:-1].rsplit(' ', 1)[1]}"
                           for v in case1)
    def final(key, every):
        return [v for r in select(records, explore=True, sync_every=every, failed=False) for v in r[key]]
    drift = ", ".join(f"lr {np.median(final('final_lr', every)):.3g} and L2 {np.median(final('final_l2', every)):.2g} "
                      f"at every {every}" for every in s.sync_every if final("final_lr", every))
    fastest = min(faster, key=lambda v: v[3]) if faster else None
    all_layers = [v for v in faster if v[0].startswith("average (all) [independent")]
    answer = ((f"Test accuracy rose significantly (paired over {n} seeds, 95 % intervals) with {names(helped)}, "
               if helped else f"No synced configuration raised test accuracy significantly over independent instances "
                              f"(paired over {n} seeds, 95 % intervals), ")
              + f"{hurt} of {len(verdicts)} lowered the instances' and {hurt_ensemble} the ensemble's, and the ensemble "
              f"of independent instances ({100 * ensemble:.2f} %) beat one network with the best learning rate "
              f"({100 * one:.2f} %)"
              + (": the report's claim that synced instances 'increase prediction and accuracy' does not hold, and "
                 "its case 1, averaging the output layer, changed accuracy by " + case1_text
                 + ", because the hidden units it feeds are ordered differently in every instance (question 4). "
                 if not helped else ". ")
              + f"Syncing does speed up training: {len(faster)} configurations reached the mean training loss "
              f"{s.target_loss:g} in significantly fewer epochs than independent instances "
              f"({number(none_ep, '.0f', f'more than {s.epochs}')} epochs)"
              + (f", fastest {fastest[0]} ({fastest[3]:.0f})" if fastest else "")
              + (", averaging every layer in " + ", ".join(f"{v[3]:.0f} at every {v[0][:-1].rsplit(' ', 1)[1]}"
                                                         for v in all_layers) if all_layers else "")
              + (f", while explore, judged on training error, drove the learning rate up and the L2 penalty down "
                 f"(median final {drift}, from lr at most {s.lr_range[1]:g} and L2 1e-3)" if drift else "")
              + (f" and stopped runs on NaN/Inf ({names(stopped)})" if stopped else "") + ".")
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
                     f"{sum(filter(None, c['diverged']))}/{n * s.instances}", str(failed(records, penalty=d)),
                     ci(c["test_log_loss"]),
                     "-" if d == 1.0 else f"{m:+.4f} ± {h:.4f}", ci(c["test_accuracy"], ".2f", True),
                     ci(c["ensemble_accuracy"], ".2f", True)])
    table = md_table(["∂", f"epochs to loss {s.target_loss:g} (median instance)", "median final training loss",
                      "instances diverged", "runs stopped on NaN/Inf", "test log loss", "Δ log loss vs ∂ = 1", "instance test acc",
                      "ensemble test acc"], rows)
    mean = {d: {k: stats(v)[0] for k, v in col[d].items()} for d in s.penalties}
    ep = {d: censored(records, s.epochs, "median_epochs_to_target", penalty=d) for d in s.penalties}
    lo, hi = s.penalties[0], s.penalties[-1]
    best_ll = min(s.penalties, key=lambda d: mean[d]["test_log_loss"])
    ll_sig = {d: diff(col[d]["test_log_loss"], one["test_log_loss"])[2] for d in s.penalties if d != 1.0}
    acc_sig = [d for d in s.penalties if d != 1.0 and diff(col[d]["test_accuracy"], one["test_accuracy"])[2] != 0]
    accuracies = ", ".join(f"{100 * mean[d]['test_accuracy']:.2f} %" for d in s.penalties)
    faster = stats(ep[hi])[0] < stats(ep[lo])[0]
    lower = [f"{d:g}" for d in acc_sig if mean[d]["test_accuracy"] < mean[1.0]["test_accuracy"]]
    diverged = [f"{d:g}" for d in s.penalties if sum(filter(None, col[d]["diverged"])) or failed(records, penalty=d)]
    answer = (f"∂ multiplies the output logits, so it acts as a larger step on the output layer: from ∂ = {lo:g} to "
              f"{hi:g} the median instance reaches the training loss {s.target_loss:g} in "
              f"{epochs_text(ep[lo], s.epochs)} and {epochs_text(ep[hi], s.epochs)} epochs, "
              + (f"instances diverge at ∂ = {names(diverged)}, " if diverged else "no instance diverges, ")
              + f"and the test log loss goes from {mean[lo]['test_log_loss']:.4f} to {mean[hi]['test_log_loss']:.4f} "
              f"(significantly worse than ∂ = 1 at {names(f'{d:g}' for d, v in ll_sig.items() if v > 0)}, better at "
              f"{names(f'{d:g}' for d, v in ll_sig.items() if v < 0)}). Test accuracy ({accuracies} for "
              f"∂ = {', '.join(f'{d:g}' for d in s.penalties)}) differs significantly from ∂ = 1 at "
              f"{names(f'∂ = {d:g}' for d in acc_sig)} and the best calibrated is ∂ = {best_ll:g}: sharpening the "
              f"cross-entropy " + ("trains faster" if faster else "does not train faster")
              + (" and buys no accuracy." if not acc_sig else
                 f", and it costs accuracy at ∂ = {names(lower)}." if lower else ", and it gains accuracy.")
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
        runs = [r for r in select(records, strategy=label, init="independent") if "pairs" in r]
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
        runs = select(records, setting=label)
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
              f"({raw['at_best']:.3f}) and {after_best(raw)} (accuracy {100 * raw['acc_end']:.1f} %)"
              + (" (the over-fitting past 5000 epochs that the report found does not appear)"
                 if raw["end"] <= 1.1 * raw["at_best"] and E > 5000 else "")
              + f", and on "
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
