"""The findings report: ``fastffnn report`` runs the experiments of
``fastffnn.reports.experiments`` and writes ``REPORT.md`` with its figures in ``Plots/``.

    fastffnn report                 # the full run (10 seeds; about half an hour on 2 cores)
    fastffnn report --quick         # the same questions, small (3 seeds, short runs): a check

Every number, table, figure and answer comes from the run that wrote the file: the answers
(``fastffnn.reports.answers``) are sentences filled in from the measured means and 95 %
intervals, with their wording (helps, hurts, no difference) decided by the intervals.  ``--json``
also writes the records themselves.
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
from . import experiments as ex
from .answers import select, q1, q2, q3, q4, q5


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
    curves = {"one network, best lr": single["curves"]}
    for label in ["none", *strategies]:
        runs = select(syncing, strategy=label, init="independent", failed=False,
                      sync_every=None if label == "none" else every)
        curves["independent (no sync)" if label == "none" else label] = [r["curve"] for r in runs]
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
