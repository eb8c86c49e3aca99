"""``fastffnn.train``: validate and convert everything here, in the calling process, build the
``Plan``, and hand it to ``driver.run``; nothing else happens here."""
from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_consistent_length, check_X_y, column_or_1d

from . import _faults, driver
from .backends import BACKENDS, get_backend
from .driver import KERNELS, Plan, Start
from .hyperparams import HyperParams
from .network import ACTIVATIONS, Topology, init_params
from .results import TrainResult
from .sync import STRATEGIES, SYNC_LAYERS, SyncSettings, check_options

CONSTRAINTS = {
    "hidden": ["array-like"],
    "activation": [StrOptions(set(ACTIVATIONS))],
    "instances": [Interval(Integral, 1, None, closed="left"), None],
    "hyperparams": [HyperParams, list, None],
    "epochs": [Interval(Integral, 1, None, closed="left")],
    "backend": [StrOptions(set(BACKENDS))],
    "workers": [Interval(Integral, 1, None, closed="left"), None],
    "kernel": [StrOptions(set(KERNELS))],
    "sync": [StrOptions(set(STRATEGIES))],
    "sync_every": [Interval(Integral, 1, None, closed="left")],
    "sync_layers": [StrOptions(set(SYNC_LAYERS))],
    "sync_options": [dict, None],
    "dtype": [StrOptions({"float64", "float32"})],
    "seed": [Interval(Integral, 0, None, closed="left")],
    "timeout": [Interval(Real, 0, None, closed="neither"), None],
    "progress": ["boolean"],
    "validation": [tuple, None],
    "callback": [callable, None],
}


def cpu_count() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def encode_targets(y: np.ndarray, classes: np.ndarray, dtype) -> np.ndarray:
    """(n, 1) 0/1 column for two classes, (n, K) one-hot for K > 2."""
    if len(classes) == 2:
        return (y == classes[1]).astype(dtype)[:, None]
    return (y[:, None] == classes[None, :]).astype(dtype)


def check_data(X, y, dtype):
    """Validate and convert training data; scikit-learn's checks and wording."""
    X, y = check_X_y(X, y, dtype=dtype, order="C", ensure_min_samples=2)
    check_classification_targets(y)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"The training data needs samples of at least 2 classes, but it contains only "
                         f"one class: {classes.tolist()[0]!r}.")
    return X, y, classes


def resolve_hyperparams(hyperparams, instances) -> list:
    if hyperparams is None or isinstance(hyperparams, HyperParams):
        return [hyperparams or HyperParams()] * (8 if instances is None else instances)
    if not all(isinstance(h, HyperParams) for h in hyperparams):
        raise TypeError("The 'hyperparams' parameter of train must be a HyperParams, a list of HyperParams "
                        "(see fastffnn.vary) or None. Got a list holding other objects instead.")
    if instances is not None and len(hyperparams) != instances:
        raise ValueError(f"The 'hyperparams' list has {len(hyperparams)} entries but instances={instances}; "
                         f"give one HyperParams per instance or leave instances=None.")
    if not hyperparams:
        raise ValueError("The 'hyperparams' list is empty; give one HyperParams per instance.")
    return list(hyperparams)


def train(X, y, *, hidden=(32, 32), activation="relu", instances=None, hyperparams=None, epochs=1000,
          backend="threads", workers=None, kernel="numba", sync="none", sync_every=100,
          sync_layers="last", sync_options=None, dtype="float64", seed=0, timeout=60.0, progress=False,
          validation=None, callback=None) -> TrainResult:
    """Train N instances of one feed-forward network in parallel on shared data.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Training data (standardise it first; see ``fastffnn.datasets``).
    y : array-like of shape (n_samples,)
        Class labels; two classes train a sigmoid output, more a softmax output.
    hidden : tuple of int
        Hidden layer widths, the same for every instance.
    activation : {"relu", "leaky_relu", "tanh", "sigmoid"}
        Hidden activation.
    instances : int, optional
        N; by default the length of ``hyperparams`` when it is a list, else 8.
    hyperparams : HyperParams or list of HyperParams, optional
        One for all instances, or one each (``fastffnn.vary``).
    epochs : int
        Epochs each instance trains.
    backend : {"serial", "threads", "processes", "prange"}
        Where instances run (``fastffnn.backends.BACKENDS``); every backend returns bit-identical
        results.
    workers : int, optional
        Threads or processes used (default: cores, at most N); instances are split among them.
    kernel : {"numba", "numba-gil", "numpy"}
        The nogil Numba kernels, the same holding the GIL, or plain numpy (the report's way).
    sync : {"none", "average", "weighted", "best"}
        What instances exchange every ``sync_every`` epochs (the report's cases 1 and 2; case 3 is
        ``HyperParams.penalty``).
    sync_every : int
        Epochs between sync points; the global loss is reduced and recorded at each.
    sync_layers : {"last", "all"}
        Layers a sync touches: the output layer (the report's choice) or all (local SGD).
    sync_options : dict, optional
        ``temperature`` of "weighted" (default 0.05), ``quantile`` of "best" (default 0.5).
    dtype : {"float64", "float32"}
    seed : int
        Run seed; each instance's seed is spawned from it unless its HyperParams sets one.
    timeout : float or None
        The stall watchdog: the run fails with ``SyncTimeout`` when no epoch has completed, and no
        instance has reached a sync, anywhere for ``timeout`` seconds -- naming the instances that
        are behind and the epoch each reached.  A run that keeps progressing never fails, however
        long its rounds; set it above the time of one epoch.  None: no watchdog.
    progress : bool
        Show a progress bar.
    validation : (X_val, y_val), optional
        Scored per instance at every sync; "weighted" and "best" rank instances on it.
    callback : callable, optional
        Called with a ``fastffnn.sync.SyncPoint`` at every sync; may change hyperparameters.

    Returns
    -------
    TrainResult
    """
    params = {k: v for k, v in locals().items() if k in CONSTRAINTS}
    validate_parameter_constraints(CONSTRAINTS, params, caller_name="train")
    hidden = tuple(hidden)
    if not all(isinstance(h, Integral) and h >= 1 for h in hidden):
        raise ValueError(f"The 'hidden' parameter of train must be a tuple of ints >= 1. Got {hidden!r} instead.")
    check_options(sync_options)
    X, y, classes = check_data(X, y, dtype)
    T = encode_targets(y, classes, dtype)
    val = None
    if validation is not None:
        if len(validation) != 2:
            raise ValueError(f"The 'validation' parameter of train must be a pair (X_val, y_val). Got a "
                             f"tuple of length {len(validation)} instead.")
        X_val = check_array(validation[0], dtype=dtype, order="C", input_name="X_val")
        if X_val.shape[1] != X.shape[1]:
            raise ValueError(f"X_val has {X_val.shape[1]} features, but X has {X.shape[1]}.")
        y_val = column_or_1d(validation[1], warn=True)
        check_consistent_length(X_val, y_val)
        unseen = np.setdiff1d(y_val, classes)
        if unseen.size:
            raise ValueError(f"y_val holds labels {unseen.tolist()} not seen in y.")
        val = (X_val, encode_targets(y_val, classes, dtype))
    hps = resolve_hyperparams(hyperparams, instances)
    N = len(hps)
    topology = Topology((X.shape[1], *hidden, T.shape[1]), activation)
    n_workers = min(N, cpu_count() if workers is None else workers)
    groups = tuple(tuple(int(k) for k in g) for g in np.array_split(np.arange(N), n_workers))
    boundaries = list(range(0, epochs, sync_every)) + [epochs]
    plan = Plan(topology, kernel, tuple(zip(boundaries[:-1], boundaries[1:])), groups, _faults.plan(),
                timeout, dtype, X.shape[0], X.shape[1])
    # instance k draws from child k of its own seed, else of the run seed (SeedSequence.spawn's
    # children): a HyperParams with a seed shared by all instances still gives N different starts
    seeds = [np.random.SeedSequence(seed if hp.seed is None else hp.seed, spawn_key=(k,))
             for k, hp in enumerate(hps)]
    params, rng = init_params(topology, seeds, dtype)
    start = Start(X, T, params, rng, np.array([hp.row(X.shape[0]) for hp in hps]))
    config = dict(hidden=hidden, activation=activation, instances=N, epochs=epochs, backend=backend,
                  workers=1 if backend == "serial" else n_workers, kernel=kernel, sync=sync,
                  sync_every=sync_every, sync_layers=sync_layers, dtype=dtype, seed=seed, n_samples=X.shape[0])
    return driver.run(plan, get_backend(backend), start,
                      SyncSettings(sync, sync_layers, sync_options, val, callback), hps, classes, config, progress)
