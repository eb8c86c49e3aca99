"""``fastffnn.train`` and ``fastffnn.resume``: validate and convert everything here, in the calling
process, build the ``Plan`` and the ``Start``, and hand them to ``driver.run``; nothing else
happens here.  A fresh run is a resumed one at epoch 0: after validation both take one path
(``_launch``)."""
from __future__ import annotations

import math
import os
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_consistent_length, check_X_y, column_or_1d

from . import _faults, driver
from .backends import BACKENDS, get_backend
from .checkpoint import Writer, data_digest, load
from .driver import KERNELS, Plan, Start
from .errors import CheckpointError
from .hyperparams import HyperParams, validate
from .network import ACTIVATIONS, INITS, Topology, init_params
from .results import History, Timing, TrainResult, TrainState
from .sync import STRATEGIES, SYNC_LAYERS, SyncSettings, check_options

CONSTRAINTS = {
    "hidden": ["array-like"],
    "activation": [StrOptions(set(ACTIVATIONS))],
    "instances": [Interval(Integral, 1, None, closed="left"), None],
    "hyperparams": [HyperParams, list, None],
    "epochs": [Interval(Integral, 1, None, closed="left")],
    "backend": [StrOptions(set(BACKENDS))],
    "workers": [Interval(Integral, 1, None, closed="left"), None],
    "ray_address": [str, None],
    "kernel": [StrOptions(set(KERNELS))],
    "sync": [StrOptions(set(STRATEGIES))],
    "init": [StrOptions(set(INITS)), np.ndarray],
    "sync_every": [Interval(Integral, 1, None, closed="left")],
    "sync_layers": [StrOptions(set(SYNC_LAYERS))],
    "sync_options": [dict, None],
    "dtype": [StrOptions({"float64", "float32"})],
    "seed": [Interval(Integral, 0, None, closed="left")],
    "timeout": [Interval(Real, 0, None, closed="neither"), None],
    "progress": ["boolean"],
    "validation": [tuple, None],
    "callback": [callable, None],
    "snapshots": ["array-like", None],
    "checkpoint": [str, os.PathLike, None],
    "checkpoint_every": [Interval(Integral, 1, None, closed="left"), None],
}
# resume's: the checkpoint, the total epochs, and train's constraints for the options a resumed
# run may choose anew (backend None: the run's own)
RESUME_CONSTRAINTS = {
    "path": [str, os.PathLike],
    "epochs": [Interval(Integral, 1, None, closed="left"), None],
    "backend": [*CONSTRAINTS["backend"], None],
    **{name: CONSTRAINTS[name] for name in ("workers", "ray_address", "timeout", "progress", "validation", "callback",
                                            "snapshots", "checkpoint", "checkpoint_every")},
}


def encode_targets(y: np.ndarray, classes: np.ndarray, dtype) -> np.ndarray:
    """(n, 1) 0/1 column for two classes, (n, K) one-hot for K > 2."""
    if len(classes) == 2:
        return (y == classes[1]).astype(dtype)[:, None]
    return (y[:, None] == classes[None, :]).astype(dtype)


def check_data(X, y, dtype):
    """Validate and convert training data; scikit-learn's checks, warnings and wording."""
    classes = np.unique(y) if _checked_already(X, y, dtype) else None
    if classes is None or _many_classes(len(classes), len(y)):
        X, y = check_X_y(X, y, dtype=dtype, order="C", ensure_min_samples=2)
        check_classification_targets(y)     # warns when the labels look like a regression target
        classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"The training data needs samples of at least 2 classes, but it contains only "
                         f"one class: {classes.tolist()[0]!r}.")
    return X, y, classes


def _checked_already(X, y, dtype) -> bool:
    """Whether X, y are what ``check_X_y`` and ``check_classification_targets`` would pass unchanged:
    X a finite C-contiguous 2-D array of the dtype with at least 2 samples, y a 1-D array of integer
    labels of the same length (integers are always binary or multiclass targets).  The usual case,
    and scikit-learn's checks of it take longer than a short run's epochs (about 0.4 ms); anything
    else goes through them, for their conversions and their messages.  X's sum is finite only if
    every element is (a large finite X whose sum overflows takes the checks' way)."""
    return (type(X) is np.ndarray and type(y) is np.ndarray and X.ndim == 2 and y.ndim == 1
            and X.dtype == dtype and y.dtype.kind in "iu" and X.flags.c_contiguous
            and X.shape[0] == y.shape[0] >= 2 and X.shape[1] >= 1 and math.isfinite(X.sum()))


def _many_classes(classes: int, samples: int) -> bool:
    """Where ``check_classification_targets`` warns that labels look like a regression target:
    more than 2 classes, more than 20 samples, and more classes than half of them."""
    return classes > 2 and samples > 20 and classes > round(0.5 * samples)


def check_validation(validation, X: np.ndarray, classes: np.ndarray, dtype) -> tuple | None:
    """(X_val, T_val) in the run's dtype from ``validation`` = (X_val, y_val), or None."""
    if validation is None:
        return None
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
    return X_val, encode_targets(y_val, classes, dtype)


def check_init(init, shape: tuple):
    """``init`` as ``init_params`` takes it: a name of ``INITS``, or given starting parameters."""
    if isinstance(init, str):
        return init
    if init.shape != shape or init.dtype.kind != "f" or not np.isfinite(init).all():
        raise ValueError(f"The 'init' parameter of train, given as an array, must hold every instance's "
                         f"starting parameters: finite floats of shape {shape} (instances, parameters). Got "
                         f"an array of {init.dtype} of shape {init.shape}"
                         f"{'' if init.dtype.kind != 'f' or np.isfinite(init).all() else ' with NaN or Inf'} instead.")
    return init


def check_snapshots(snapshots, epochs: int) -> list:
    """The snapshot epochs, sorted and without repeats."""
    if snapshots is None:
        return []
    values = np.asarray(snapshots, dtype=object).ravel().tolist()
    if not all(isinstance(e, Integral) and not isinstance(e, bool) and 0 <= e <= epochs for e in values):
        raise ValueError(f"The 'snapshots' parameter of train must be a list of epochs, ints in the range "
                         f"[0, {epochs}] (0 is the initial weights, {epochs} the end). Got {snapshots!r} instead.")
    return sorted({int(e) for e in values})


def plan_rounds(start: int, epochs: int, sync_every: int, snapshots) -> tuple[tuple, frozenset]:
    """(rounds, snapshot_only): epochs [start, epochs) cut at every multiple of ``sync_every`` --
    counted from epoch 0, so a resumed run syncs where the straight one does -- at the end, and at
    the snapshot epochs in between, which are the round ends that are not sync points."""
    syncs = set(range((start // sync_every + 1) * sync_every, epochs, sync_every)) | {epochs}
    ends = sorted(syncs | {e for e in snapshots if start < e < epochs})
    bounds = [start, *ends]
    return tuple(zip(bounds[:-1], bounds[1:])), frozenset(ends) - syncs


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
          sync_layers="all", sync_options=None, dtype="float64", seed=0, timeout=60.0, progress=False,
          validation=None, callback=None, snapshots=None, checkpoint=None, checkpoint_every=None,
          ray_address=None, init="independent") -> TrainResult:
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
    backend : {"serial", "threads", "processes", "prange", "ray"}
        Where instances run (``fastffnn.backends.BACKENDS``); every backend returns bit-identical
        results.
    workers : int, optional
        Threads, processes or Ray actors used (default: cores -- with Ray, the cluster's CPUs --
        at most N); instances are split among them.
    kernel : {"numba", "numba-gil", "numpy"}
        The nogil Numba kernels, the same holding the GIL, or plain numpy (the report's way).
    sync : {"none", "average", "align", "weighted", "best"}
        What instances exchange every ``sync_every`` epochs (the report's cases 1 and 2; case 3 is
        ``HyperParams.penalty``).  "align" averages like "average" after permuting each instance's
        hidden units to match instance 0's (``fastffnn.align``), which changes no instance's function.
    init : {"independent", "shared"} or ndarray of shape (instances, n_params)
        How instances start: each from its own random draw, or all from instance 0's weights (only
        their batch order and hyperparameters then differ), or from the given flat parameter rows
        (laid out as ``Topology.views`` reads them; the run's config then says ``"given"``).
    sync_every : int
        Epochs between sync points; the global loss is reduced and recorded at each.  The last
        epoch is a sync point too.
    sync_layers : {"all", "last"}
        Layers a sync touches: all (local SGD, the default) or the output layer (the report's
        choice).  The defaults follow REPORT.md (question 2): on the breast-cancer data no sync
        strategy beat the ensemble of independent instances (``sync="none"``, ``init="independent"``)
        in test accuracy, averaging the output layer alone changed nothing measurable, and
        averaging every layer reached a given training loss several times sooner.
    sync_options : dict, optional
        ``temperature`` of "weighted" (default 0.05); ``quantile`` of "best" (default 0.5): the
        instances whose error is above it copy the best one; ``explore`` (default False), "best"
        only: PBT's exploit and explore -- a copying instance also takes the best one's ``lr``,
        ``l2`` and ``momentum``, each multiplied by 0.8 or 1.2 (seeded by ``seed`` and the epoch,
        so reproducible; momentum capped at 0.999), and each copy is logged in
        ``history.exploits``.
    dtype : {"float64", "float32"}
    seed : int
        Run seed; each instance's seed is spawned from it unless its HyperParams sets one.
    timeout : float or None
        The stall watchdog: the run fails with ``SyncTimeout`` when no epoch has completed, and no
        instance has reached a sync, anywhere for ``timeout`` seconds -- naming the instances that
        are behind and the epoch each reached.  A run that keeps progressing never fails, however
        long its rounds; set it above the time of one epoch.  None: no watchdog.
    progress : bool
        Show a progress bar over epochs, with the global loss at each sync point.
    validation : (X_val, y_val), optional
        Scored per instance at every sync; "weighted" and "best" rank instances on it.
    callback : callable, optional
        Called with a ``fastffnn.sync.SyncPoint`` at every sync; may change hyperparameters.
    snapshots : list of int, optional
        Epochs at which every instance's flat parameters are recorded into
        ``result.history.snapshots`` ({epoch: (N, P)}); 0 is the initial weights.  A snapshot
        epoch between sync points ends a round there without a sync, which changes no result.
    checkpoint : str or path-like, optional
        A file to write the run to at sync points (``fastffnn.checkpoint``), atomically, keeping
        the previous one as ``<checkpoint>.prev``; ``fastffnn.resume`` continues from it.
    checkpoint_every : int, optional
        Epochs between checkpoints: one is written at the first sync point at least this many
        epochs after the last.  None: at every sync point.  The end of the run is always written.

    ray_address : str, optional
        ``backend="ray"``: the cluster to run on (``ray start --head`` prints it); else the
        ``RAY_ADDRESS`` environment variable, else the Ray this process is connected to, else a
        local Ray that the run starts and stops.

    Returns
    -------
    TrainResult
    """
    params = {k: v for k, v in locals().items() if k in CONSTRAINTS}
    validate(CONSTRAINTS, params, "train")
    hidden = tuple(hidden)
    if not all(isinstance(h, Integral) and h >= 1 for h in hidden):
        raise ValueError(f"The 'hidden' parameter of train must be a tuple of ints >= 1. Got {hidden!r} instead.")
    options = check_options(sync_options, sync)
    snapshots = check_snapshots(snapshots, epochs)
    X, y, classes = check_data(X, y, dtype)
    T = encode_targets(y, classes, dtype)
    val = check_validation(validation, X, classes, dtype)
    hps = resolve_hyperparams(hyperparams, instances)
    N, n = len(hps), X.shape[0]
    topology = Topology((X.shape[1], *hidden, T.shape[1]), activation)
    # instance k draws from child k of its own seed, else of the run seed (SeedSequence.spawn's
    # children): a HyperParams with a seed shared by all instances still gives N different starts
    seeds = [np.random.SeedSequence(seed if hp.seed is None else hp.seed, spawn_key=(k,))
             for k, hp in enumerate(hps)]
    params, rng = init_params(topology, seeds, dtype, check_init(init, (N, topology.n_params)))
    state = TrainState(np.zeros((N, 2, topology.n_params), dtype), np.zeros(N, np.int64), rng,
                       np.tile(np.arange(n), (N, 1)), np.array([hp.row(n) for hp in hps]).astype(dtype), epochs,
                       data_digest(X, T, classes), None if val is None else data_digest(*val))
    start = Start(X, T, params, state, History(np.empty((N, 0), dtype=dtype)), Timing(0.0, np.zeros(N), np.zeros(N)))
    config = dict(hidden=tuple(int(h) for h in hidden), activation=activation, instances=N, epochs=int(epochs),
                  kernel=kernel, sync=sync, sync_every=int(sync_every), sync_layers=sync_layers, sync_options=options,
                  dtype=dtype, seed=int(seed), n_samples=n, n_features=X.shape[1], snapshots=snapshots,
                  init=init if isinstance(init, str) else "given")
    return _launch(start, config, hps, classes, val, backend=backend, workers=workers, ray_address=ray_address,
                   timeout=timeout,
                   progress=progress, callback=callback, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                   caller="train")


def resume(path, X, y, *, epochs=None, validation=None, backend=None, workers=None, timeout=60.0, progress=False,
           callback=None, snapshots=None, checkpoint=None, checkpoint_every=None, ray_address=None) -> TrainResult:
    """Continue a checkpointed run, bit-identically: 25 epochs, a checkpoint and a resume to 50
    give the weights, state and history of 50 epochs straight, on any backend.

    Parameters
    ----------
    path : str or path-like
        A checkpoint (``fastffnn.save`` or ``train(checkpoint=...)``).
    X, y : array-like
        The data the run was trained on, given again: the checkpoint keeps only its digest, and a
        resume on other data is refused (``CheckpointError``).
    epochs : int, optional
        The total to train to (not the epochs to add); by default the epochs the run was started
        for.  The sync points stay on the run's grid, every ``sync_every`` epochs from 0.
    validation : (X_val, y_val), optional
        The run's validation data, given again if it had any (checked like X, y).
    snapshots : list of int, optional
        More epochs to record, past the checkpoint's (the snapshots the run took before it are
        kept, and earlier epochs in this list are ignored): the same list as a straight run's gives
        the same snapshots.
    backend, workers, ray_address, timeout, progress, callback, checkpoint, checkpoint_every
        As for ``train``; ``backend`` defaults to the run's.  Everything else -- topology,
        hyperparameters, sync, dtype, kernel, seed -- is the run's own.

    Returns
    -------
    TrainResult
        The whole run: history from epoch 0, timing summed over its parts.
    """
    params = {k: v for k, v in locals().items() if k in RESUME_CONSTRAINTS}
    validate(RESUME_CONSTRAINTS, params, "resume")
    saved = load(path)
    config, state = saved.config, saved.state
    X, y, classes = check_data(X, y, config["dtype"])
    T = encode_targets(y, classes, config["dtype"])
    val = check_validation(validation, X, classes, config["dtype"])
    if data_digest(X, T, classes) != state.data_sha256:
        raise CheckpointError(path, f"was trained on other data than this X, y ({X.shape[0]} samples, "
                                    f"{X.shape[1]} features; the run had {config['n_samples']} and "
                                    f"{config['n_features']}); resume with the data it was trained on")
    given = None if val is None else data_digest(*val)
    if given != state.validation_sha256:
        problem = ("was trained without validation data; resume it without" if state.validation_sha256 is None
                   else "was trained with validation data; pass the run's validation=(X_val, y_val) again"
                   if given is None else "was trained with other validation data than given here; pass the run's own")
        raise CheckpointError(path, problem)
    done = config["epochs"]
    epochs = state.target_epochs if epochs is None else int(epochs)
    if epochs <= done:
        raise ValueError(f"The 'epochs' parameter of resume is the total to train to, and {path} has trained "
                         f"{done} epochs. Got {epochs} instead; pass more than {done}.")
    more = [e for e in check_snapshots(snapshots, epochs) if e > done]
    start = Start(X, T, saved.ensemble.params, state, saved.history, saved.timing)
    config = {**config, "epochs": epochs, "snapshots": sorted({*config["snapshots"], *more})}
    return _launch(start, config, saved.hyperparams, classes, val,
                   backend=config["backend"] if backend is None else backend, workers=workers,
                   ray_address=ray_address, timeout=timeout,
                   progress=progress, callback=callback, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                   caller="resume")


def _launch(start: Start, config: dict, hyperparams: list, classes: np.ndarray, validation, *, backend, workers,
            ray_address, timeout, progress, callback, checkpoint, checkpoint_every, caller: str) -> TrainResult:
    """Build the Plan of ``start`` (fresh or resumed) to ``config["epochs"]``, and run it."""
    if checkpoint_every is not None and checkpoint is None:
        raise ValueError(f"The 'checkpoint_every' parameter of {caller} needs checkpoint=PATH, the file to "
                         f"write. Got checkpoint_every={checkpoint_every!r} with checkpoint=None.")
    e0, N = start.history.losses.shape[1], len(hyperparams)
    writer = None if checkpoint is None else Writer(checkpoint, checkpoint_every, e0, caller)
    runner = get_backend(backend, ray_address)
    n_workers = runner.default_workers(N) if workers is None else min(N, workers)
    groups = tuple(tuple(int(k) for k in g) for g in np.array_split(np.arange(N), n_workers))
    rounds, snapshot_only = plan_rounds(e0, config["epochs"], config["sync_every"], config["snapshots"])
    n, F = start.X.shape
    topology = Topology((F, *config["hidden"], start.T.shape[1]), config["activation"])
    plan = Plan(topology, config["kernel"], rounds, groups, _faults.plan(), timeout, config["dtype"], n, F,
                frozenset(config["snapshots"]), snapshot_only)
    config = {**config, "backend": backend, "workers": 1 if backend == "serial" else n_workers}
    sync = SyncSettings(config["sync"], config["sync_layers"], config["sync_options"], validation, callback,
                        config["seed"])
    return driver.run(plan, runner, start, sync, hyperparams, classes, config, progress, writer)
