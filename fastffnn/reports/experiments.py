"""The experiments behind ``fastffnn report`` (``fastffnn.reports.findings``): each function runs
one question's trainings and returns plain records -- dicts of the settings and what was measured
-- that the report turns into tables, figures and answers.  Every run is seeded, so every record
can be reproduced by one ``fastffnn.train`` call with the settings it names.

Data: the embedded breast-cancer set, one stratified 80/20 train/test split per seed
(``datasets.breast_cancer(seed=...)``), standardised on the train part unless a question says
otherwise.  The test part is used only to measure: no sync strategy sees it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from time import perf_counter

import numpy as np

from .. import api, datasets, shutdown
from ..align import align, distance
from ..backends.base import cpu_count
from ..errors import NonFiniteError
from ..hyperparams import HyperParams, vary
from ..network import Ensemble, Topology


@dataclass(frozen=True)
class Settings:
    """How large the experiments are.  ``FULL`` is the committed REPORT.md's; ``QUICK`` checks in
    well under two minutes that the command works (its numbers are too few to conclude from)."""

    seeds: int = 10                     # splits: every table's mean and 95 % interval are over them
    instances: int = 8
    hidden: tuple = (32, 32)
    epochs: int = 1000
    lr_range: tuple = (0.005, 0.2)      # the instances' learning rates, log-spaced
    sync_every: tuple = (1, 10, 100)
    target_loss: float = 0.1            # "converged": mean training loss of the instances at most this
    gil_instances: tuple = (1, 2, 4, 8)
    gil_epochs: int = 200
    gil_repeats: int = 10
    cold_repeats: int = 5
    penalties: tuple = (0.5, 1.0, 2.0, 4.0)
    overfit_epochs: int = 8000
    overfit_every: int = 250            # epochs between the test-set measurements of question 5

    @property
    def lrs(self) -> list:
        return [float(lr) for lr in np.geomspace(*self.lr_range, self.instances)]


FULL = Settings()
QUICK = Settings(seeds=3, instances=4, epochs=200, sync_every=(1, 10), gil_instances=(1, 2, 4), gil_epochs=50,
                 gil_repeats=3, cold_repeats=2, overfit_epochs=1000, overfit_every=100)


@functools.cache
def split(seed: int, scale: bool = True) -> tuple:
    """(X_train, X_test, y_train, y_test) of one seed's split; cached, so every question and
    strategy trains on the same splits."""
    return datasets.breast_cancer(test_size=0.2, seed=seed, scale=scale)


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _test_probas(ensemble, X_test) -> np.ndarray:
    """(N, n) probability of the positive class by each instance."""
    return np.array([inst.predict_proba(X_test)[:, 1] for inst in ensemble])


def _first_at_most(curve: np.ndarray, target: float) -> int | None:
    """Epochs until ``curve`` (per epoch) first reaches ``target``; None if it never does."""
    hit = np.flatnonzero(curve <= target)
    return int(hit[0]) + 1 if hit.size else None


MEASURES = ("epochs_to_target", "final_loss", "median_epochs_to_target", "median_final_loss", "diverged",
            "test_accuracy", "ensemble_accuracy", "test_log_loss", "instance_accuracy", "instance_final_loss",
            "instance_epochs_to_target", "curve", "median_curve")


def trained(**kw):
    """``fastffnn.train(**kw)``, or None when an instance's loss or weights became NaN or Inf (the
    run stops there): a result the questions count, not an error of the report."""
    try:
        return api.train(**kw)
    except NonFiniteError:
        return None


def measure(result, X_test, y_test, target: float) -> dict:
    """What the questions compare, for one run: epochs until the instances' mean (and median)
    training loss reaches ``target``, the final losses, the instances that ended above their first
    epoch's loss (diverged), and test accuracy and log loss of each instance and of the ensemble
    (the mean of their probabilities).  A run that stopped on a non-finite value (``trained``
    returned None) has every measure None and ``failed`` True."""
    if result is None:
        return {**dict.fromkeys(MEASURES), "failed": True}
    losses = result.history.losses
    curve = losses.mean(axis=0)
    probas = _test_probas(result.ensemble, X_test)
    per_instance_acc = ((probas > 0.5) == y_test).mean(axis=1)
    return {"epochs_to_target": _first_at_most(curve, target), "final_loss": float(curve[-1]),
            # robust to an instance that diverged: the median instance
            "median_epochs_to_target": _first_at_most(np.median(losses, axis=0), target),
            "median_final_loss": float(np.median(losses[:, -1])),
            "diverged": int(np.sum(losses[:, -1] > losses[:, 0])),
            "test_accuracy": float(per_instance_acc.mean()),
            "ensemble_accuracy": float(((probas.mean(axis=0) > 0.5) == y_test).mean()),
            "test_log_loss": float(np.mean([_log_loss(p, y_test) for p in probas])),
            "instance_accuracy": per_instance_acc.tolist(),
            "instance_final_loss": result.history.losses[:, -1].tolist(),
            "instance_epochs_to_target": [_first_at_most(c, target) for c in result.history.losses],
            "curve": curve, "median_curve": np.median(losses, axis=0), "failed": False}


# --- 1. the GIL -------------------------------------------------------------------------------

# (backend, kernel): threads with the three kernels, processes, prange; serial is every kernel's
# one-core baseline
GIL_CONFIGS = (("threads", "numpy"), ("threads", "numba-gil"), ("threads", "numba"), ("processes", "numba"),
               ("prange", "numba"))
GIL_SYNC = dict(sync="average", sync_every=10)


def gil(s: Settings, log=print) -> list:
    """Throughput (instance-epochs per second of wall time, compilation excluded) of every
    (backend, kernel) and of serial with the same kernel, at each N, ``gil_repeats`` times,
    interleaved (one repeat of every configuration before the next) so the machine's drift
    touches all alike."""
    X, _, y, _ = split(0)
    configs = [("serial", k) for k in ("numpy", "numba-gil", "numba")] + list(GIL_CONFIGS)
    records = []

    def run(backend, kernel, n):
        res = api.train(X, y, hidden=s.hidden, instances=n, epochs=s.gil_epochs, backend=backend, kernel=kernel,
                        seed=0, **GIL_SYNC)
        return n * s.gil_epochs / res.timing.wall

    for backend, kernel in configs:         # compile (and start the warm pool) outside the timings
        run(backend, kernel, 2)
    for repeat in range(s.gil_repeats):
        for n in s.gil_instances:
            for backend, kernel in configs:
                records.append({"backend": backend, "kernel": kernel, "instances": n, "repeat": repeat,
                                "throughput": run(backend, kernel, n)})
        log(f"  the GIL: repeat {repeat + 1}/{s.gil_repeats}")
    return records


def cold_start(s: Settings) -> list:
    """The report's multiprocessing started fresh interpreters for every run: the wall time of a
    whole run (``perf_counter`` around ``train``) on processes with a cold pool (after
    ``fastffnn.shutdown()``), on the warm pool, and on threads with the numpy kernel (the report's),
    at N = the cores and ``gil_epochs`` epochs."""
    X, _, y, _ = split(0)
    n = cpu_count()
    records = []
    for repeat in range(s.cold_repeats):
        for label, backend, kernel, cold in (("processes, fresh workers", "processes", "numba", True),
                                             ("processes, warm pool", "processes", "numba", False),
                                             ("threads, numpy kernel", "threads", "numpy", False)):
            if cold:
                shutdown()
            t = perf_counter()
            api.train(X, y, hidden=s.hidden, instances=n, epochs=s.gil_epochs, backend=backend, kernel=kernel,
                      seed=0, **GIL_SYNC)
            records.append({"label": label, "instances": n, "repeat": repeat, "seconds": perf_counter() - t})
    return records


# --- 2. does syncing help? --------------------------------------------------------------------

# (label, sync, sync_layers, explore): the report's cases 1 and 2, averaging every layer,
# the aligned average, and copying the best (with and without PBT's explore)
SYNCED = (("average (last)", "average", "last", False), ("average (all)", "average", "all", False),
          ("align (last)", "align", "last", False), ("align (all)", "align", "all", False),
          ("weighted (last)", "weighted", "last", False), ("best (all)", "best", "all", False),
          ("best (all) + explore", "best", "all", True))
INITS = ("independent", "shared")
# the runs whose pairs of instances question 4 measures (at the middle sync_every), one epoch
# before the end: the last epoch is a sync point, after which averaged layers are equal
PAIRS = ("none", "average (last)", "average (all)", "align (all)")


def syncing(s: Settings, log=print) -> list:
    """Every synced configuration of ``SYNCED`` x ``INITS`` x ``sync_every``, and the
    independent instances (``sync="none"``) from each init, on every seed.  Each record carries
    ``measure``'s numbers; the runs of ``PAIRS`` also carry question 4's pair measurements."""
    configs = [("none", "none", "last", False, init, None) for init in INITS]
    configs += [(*c, init, every) for every in s.sync_every for init in INITS for c in SYNCED]
    pairs_every = s.sync_every[len(s.sync_every) // 2]
    records = []
    for seed in range(s.seeds):
        X, X_test, y, y_test = split(seed)
        for label, sync, layers, explore, init, every in configs:
            pairs = label in PAIRS and every in (None, pairs_every)
            res = trained(X=X, y=y, hidden=s.hidden, hyperparams=vary(lr=s.lrs), epochs=s.epochs, sync=sync,
                          sync_layers=layers, sync_every=every or s.epochs, init=init, seed=seed,
                          sync_options={"explore": True} if explore else None,
                          snapshots=[s.epochs - 1] if pairs else None)
            record = {"strategy": label, "sync": sync, "sync_layers": layers, "explore": explore, "init": init,
                      "sync_every": every, "seed": seed, **measure(res, X_test, y_test, s.target_loss)}
            if res is None:
                records.append(record)
                continue
            record["exploits"] = len(res.history.exploits)
            # the hyperparameters explore ended with (PBT's drift)
            record["final_lr"] = [hp.lr for hp in res.hyperparams]
            record["final_l2"] = [hp.l2 for hp in res.hyperparams]
            if sync == "none":      # each instance alone is one network: its own curve
                record["instance_curves"] = res.history.losses
            if pairs:
                record["pairs"] = pair_measures(res, res.history.snapshots[s.epochs - 1], X_test)
            records.append(record)
        log(f"  syncing: seed {seed + 1}/{s.seeds}")
    return records


def pair_measures(result, params, X_test) -> dict:
    """For every pair of instances with the (N, P) ``params`` (a snapshot of ``result``): weight
    distance (all layers) before and after aligning the second to the first, and the fraction of
    test samples on which they predict the same class."""
    ens = Ensemble(result.ensemble.topology, params, result.hyperparams, result.ensemble.classes_)
    top = ens.topology
    predictions = [inst.predict(X_test) for inst in ens]
    pairs = [(i, j) for i in range(len(ens)) for j in range(i + 1, len(ens))]
    return {"before": [distance(top, params[i], params[j]) for i, j in pairs],
            "after": [distance(top, params[i], align(top, params[i], params[j])) for i, j in pairs],
            "agreement": [float(np.mean(predictions[i] == predictions[j])) for i, j in pairs]}


# --- 3. the penalty ---------------------------------------------------------------------------

def penalty(s: Settings, log=print) -> list:
    """Independent instances (the learning-rate spread of question 2) with the report's case 3,
    sigmoid(∂ z), for every ∂ of ``penalties``, on every seed."""
    records = []
    for seed in range(s.seeds):
        X, X_test, y, y_test = split(seed)
        for d in s.penalties:
            res = trained(X=X, y=y, hidden=s.hidden, hyperparams=vary(lr=s.lrs, penalty=d), epochs=s.epochs,
                          sync="none", seed=seed)
            records.append({"penalty": d, "seed": seed, **measure(res, X_test, y_test, s.target_loss)})
        log(f"  penalty: seed {seed + 1}/{s.seeds}")
    return records


# --- 5. epochs and over-fitting ---------------------------------------------------------------

REPORT_INIT_SCALE = 22      # the report's weights: standard normal / sqrt(455 samples) ~ randn / 22
# (label, standardised data, hyperparameters, the report's init): its own settings, the same on
# standardised data, and the library's optimiser (lr 0.05, momentum 0.9) without and with L2
OVERFIT = (("the report's: raw data", False, HyperParams(lr=0.0005, l2=0.0, momentum=0.0), True),
           ("the report's, standardised data", True, HyperParams(lr=0.0005, l2=0.0, momentum=0.0), True),
           ("standardised, lr 0.05, momentum 0.9, no L2", True, HyperParams(lr=0.05, l2=0.0, momentum=0.9), False),
           ("standardised, lr 0.05, momentum 0.9, L2 1e-3", True, HyperParams(lr=0.05, l2=1e-3, momentum=0.9),
            False))


def overfitting(s: Settings, log=print) -> list:
    """Each setting of ``OVERFIT``: N instances of 30-32-32-1 ReLU, full batch, for
    ``overfit_epochs``, the test loss and accuracy measured every ``overfit_every`` epochs from
    weight snapshots; per seed."""
    epochs = list(range(0, s.overfit_epochs + 1, s.overfit_every))
    topology = Topology((30, *s.hidden, 1), "relu")
    records = []
    for seed in range(s.seeds):
        for label, scale, hp, report_init in OVERFIT:
            X, X_test, y, y_test = split(seed, scale)
            init = (np.random.default_rng(seed).standard_normal((s.instances, topology.n_params)) / REPORT_INIT_SCALE
                    if report_init else "independent")
            res = api.train(X, y, hidden=s.hidden, hyperparams=hp, instances=s.instances, epochs=s.overfit_epochs,
                            init=init, seed=seed, sync="none", sync_every=s.overfit_every, snapshots=epochs)
            probas = [_test_probas(Ensemble(topology, res.history.snapshots[e], res.hyperparams, res.ensemble.classes_),
                                   X_test) for e in epochs]
            records.append({"setting": label, "seed": seed, "epochs": epochs,
                            "train_loss": res.history.losses.mean(axis=0)[np.maximum(epochs, 1) - 1].tolist(),
                            "test_loss": [float(np.mean([_log_loss(p, y_test) for p in ps])) for ps in probas],
                            "test_accuracy": [float(((ps > 0.5) == y_test).mean()) for ps in probas]})
        log(f"  over-fitting: seed {seed + 1}/{s.seeds}")
    return records
