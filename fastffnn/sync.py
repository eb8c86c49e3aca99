"""Sync strategies -- the report's three cases -- and the barrier action that applies them.

The action runs once per round, after every instance finished its span and before any starts the
next: it checks every instance for NaN/Inf (so a bad instance never reaches the others) and
records the weight snapshot due there.  At a sync point -- every round end but those a snapshot
epoch added -- it also reduces the global loss, applies the strategy, records history, and calls
the user's callback.  It computes the new weights first and assigns them in one step, so a failed
sync never half-applies.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import config, predict_proba
from .kernels.config import PENALTY
from .kernels.reduce import combine_rows

from .align import match, permute
from .errors import NonFiniteError
from .hyperparams import HyperParams
from .results import Exploit

STRATEGIES = ("none", "average", "align", "weighted", "best")
SYNC_LAYERS = ("last", "all")
DEFAULT_OPTIONS = {"temperature": 0.05, "quantile": 0.5, "explore": False}
# PBT's explore (sync="best" with explore): each copied hyperparameter is multiplied by one of
# these factors, drawn per instance and hyperparameter from a generator seeded by the run seed and
# the sync epoch (so a resumed run draws what a straight one would); momentum is kept below 1
EXPLORED = ("lr", "l2", "momentum")
EXPLORE_FACTORS = (0.8, 1.2)
MOMENTUM_CAP = 0.999
EXPLORE_KEY = 0xE7910E      # keeps the explore generator's seed apart from the instances' seeds
# the hyperparameter columns a callback may change during a run (the batch size fixes the scratch,
# the optimizer what its state means)
RUNTIME_HYPERPARAMS = tuple(name for name in config.HYPER_COLUMNS if name not in ("batch_size", "optimizer"))


def check_options(options: dict | None, strategy: str = "none") -> dict:
    """The strategies' options with defaults filled in; bad keys or values raise before the run."""
    options = {**DEFAULT_OPTIONS, **(options or {})}
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"The 'sync_options' parameter of train accepts the keys {sorted(DEFAULT_OPTIONS)}. "
                         f"Got {unknown} instead.")
    if not (np.isfinite(options["temperature"]) and options["temperature"] > 0):
        raise ValueError(f"sync_options['temperature'] must be a float in the range (0, inf). "
                         f"Got {options['temperature']!r} instead.")
    if not 0 <= options["quantile"] <= 1:
        raise ValueError(f"sync_options['quantile'] must be a float in the range [0, 1]. "
                         f"Got {options['quantile']!r} instead.")
    if not isinstance(options["explore"], (bool, np.bool_)):
        raise ValueError(f"sync_options['explore'] must be True or False. Got {options['explore']!r} instead.")
    if options["explore"] and strategy != "best":
        raise ValueError(f"sync_options['explore'] perturbs the hyperparameters that sync='best' copies; "
                         f"it needs sync='best'. Got sync={strategy!r}; pass sync='best' or drop 'explore'.")
    return {**options, "explore": bool(options["explore"])}


def sync_columns(topology, sync_layers: str) -> slice:
    """The slice of the flat parameter row a sync touches: the output layer, or everything."""
    if sync_layers == "all":
        return slice(0, topology.n_params)
    return slice(topology.layer_slices()[-1][0].start, topology.n_params)


def instance_probas(ctx, X: np.ndarray) -> np.ndarray:
    """(N, n, K) probabilities of every instance on X (n, F)."""
    probas = np.empty((ctx.plan.instances, X.shape[0], ctx.sizes[-1]), dtype=ctx.params.dtype)
    for k in range(ctx.plan.instances):
        predict_proba(probas[k], X, ctx.params[k], ctx.sizes, ctx.act, ctx.hyper[k, PENALTY], ctx.binary)
    return probas


def combine(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_k weights[k] rows[k], in instance order (compiled; the same for every backend)."""
    out = np.empty(rows.shape[1], dtype=rows.dtype)
    combine_rows(out, rows, weights.astype(rows.dtype))
    return out


@dataclass
class SyncPoint:
    """What a ``callback`` sees at a sync point; ``set_hyperparams`` changes them for the next span."""

    epoch: int
    round: int
    global_loss: float
    instance_losses: np.ndarray
    val_accuracy: np.ndarray | None
    _ctx: object

    @property
    def hyperparams(self) -> list:
        n = self._ctx.plan.n_samples
        return [HyperParams.from_row(row, n, None) for row in self._ctx.hyper]

    def set_hyperparams(self, instance: int | None = None, **changes) -> None:
        """Change ``RUNTIME_HYPERPARAMS`` (``lr``, ``l2``, ``momentum``, ``penalty``, Adam's ``beta1``,
        ``beta2``, ``eps``) of one instance (or all) from now on."""
        bad = sorted(set(changes) - set(RUNTIME_HYPERPARAMS))
        if bad:
            raise ValueError(f"set_hyperparams can change {list(RUNTIME_HYPERPARAMS)} at run time. "
                             f"Got {bad} instead.")
        HyperParams(**changes)      # the same checks as at the start ("The 'lr' parameter ...")
        rows = slice(None) if instance is None else instance
        for name, value in changes.items():
            self._ctx.hyper[rows, config.HYPER_COLUMNS.index(name)] = value


@dataclass(frozen=True)
class SyncSettings:
    """What the barrier action does: ``strategy`` over ``layers`` with ``options``; ``validation``
    is (X_val, T_val) in the run's dtype or None; ``callback`` is the user's, or None."""

    strategy: str = "none"
    layers: str = "last"
    options: dict | None = None
    validation: tuple | None = None
    callback: object = None
    seed: int = 0


class SyncAction:
    """The barrier action: one call per round, in round order.  At every round end it checks the
    round for NaN/Inf and records the snapshot due there; at a sync point it also reduces the
    global loss, applies the strategy, records history, calls the user's ``callback`` and then
    ``at_sync(epoch)`` (the driver's checkpoint hook)."""

    def __init__(self, ctx, settings: SyncSettings, history, progress=None, at_sync=None):
        self.ctx, self.history, self.progress, self.at_sync = ctx, history, progress, at_sync
        self.strategy, self.callback, self.validation = settings.strategy, settings.callback, settings.validation
        self.columns = sync_columns(ctx.plan.topology, settings.layers)
        self.options = check_options(settings.options, settings.strategy)
        self.seed = settings.seed
        self.round = 0

    @property
    def predicts(self) -> bool:
        """Whether its sync points predict with every instance: on the validation data, or for a
        strategy that weighs the instances by their errors."""
        return self.validation is not None or self.strategy in ("weighted", "best")

    def __call__(self) -> None:
        try:
            self._round(self.round)
        except BaseException as exc:
            self.ctx.failure.record(exc)
            raise
        self.round += 1
        self.ctx.synced = self.round

    def _round(self, r: int) -> None:
        ctx = self.ctx
        e0, e1 = ctx.plan.rounds[r]
        for fault in ctx.plan.faults_at(range(ctx.plan.instances), e0, e1, "reduction"):
            ctx.fire(fault)
        self._check_finite(e0, e1)
        point = self._sync(e1) if ctx.plan.is_sync(r) else None
        if e1 in ctx.plan.snapshots:
            self.history.snapshots[e1] = ctx.params.copy()
        if self.progress is not None:
            self.progress.update(e1 - e0)
            if point is not None:
                self.progress.set_postfix(loss=f"{point.global_loss:.4g}")
        if point is not None:
            if self.callback is not None:
                self.callback(point)
            if self.at_sync is not None:
                self.at_sync(e1)

    def _sync(self, e1: int) -> SyncPoint:
        """The sync at epoch ``e1``: global loss, validation, strategy, history."""
        ctx = self.ctx
        N = ctx.plan.instances
        last = ctx.losses[:, e1 - 1:e1]
        global_loss = float(combine(last, np.full(N, 1.0 / N))[0])
        probas = None
        if self.predicts:
            X, T = self.validation if self.validation is not None else (ctx.X, ctx.T)
            probas = instance_probas(ctx, X)
        val_acc = self.history.record_sync(
            e1, global_loss, probas, None if self.validation is None else self.validation[1])
        if self.strategy != "none" and N > 1:
            # err_i = mean |y_hat - y| per instance: the report's case-2 criterion
            self._apply(None if probas is None else np.abs(probas - T).mean(axis=(1, 2)), e1)
        # ``round`` counts sync points over the whole run, resumed parts included
        return SyncPoint(e1, len(self.history.sync_epochs) - 1, global_loss, last[:, 0].copy(), val_acc, ctx)

    def _check_finite(self, e0: int, e1: int) -> None:
        ctx = self.ctx
        if np.isfinite(ctx.losses[:, e0:e1]).all() and np.isfinite(ctx.params).all():
            return      # the usual case, in two calls; otherwise find the first culprit
        for k in range(ctx.plan.instances):
            bad = ~np.isfinite(ctx.losses[k, e0:e1])
            if bad.any():
                raise NonFiniteError(k, e0 + int(np.argmax(bad)))
            if not np.isfinite(ctx.params[k]).all():
                raise NonFiniteError(k, e1 - 1)

    def _apply(self, err, epoch: int) -> None:
        params, moments, steps, cols = self.ctx.params, self.ctx.moments, self.ctx.steps, self.columns
        N = params.shape[0]
        if self.strategy in ("average", "align"):
            if self.strategy == "align":
                # hidden units matched to instance 0's first (Git Re-Basin weight matching), so the
                # average does not mix units that play different roles; a permutation changes no
                # instance's function, and weights and the optimizer's moments move together
                topology = self.ctx.plan.topology
                perms = [None] + [match(topology, params[0], params[k]) for k in range(1, N)]
                params[1:] = [permute(topology, params[k], perms[k]) for k in range(1, N)]
                moments[1:] = [permute(topology, moments[k], perms[k]) for k in range(1, N)]
            params[:, cols] = combine(params[:, cols], np.full(N, 1.0 / N))
        elif self.strategy == "weighted":
            logits = -err / self.options["temperature"]
            w = np.exp(logits - logits.max())
            params[:, cols] = combine(params[:, cols], w / w.sum())
        elif self.strategy == "best":
            best = int(np.argmin(err))
            losers = np.flatnonzero(err > np.quantile(err, self.options["quantile"]))
            params[np.ix_(losers, np.arange(cols.start, cols.stop))] = params[best, cols]
            hyper = self.ctx.hyper
            before = hyper.copy() if self.options["explore"] else None
            if self.options["explore"]:
                # PBT copies the whole configuration: the optimizer (and its constants) too
                copied = [c for c, name in enumerate(config.HYPER_COLUMNS) if name != "batch_size"]
                hyper[np.ix_(losers, copied)] = hyper[best, copied]
            # the optimizer state goes with the weights -- both moments and the step count (Adam's
            # t) -- to the losers of the best's optimizer; one of another optimizer keeps its own
            kin = losers[hyper[losers, config.OPTIMIZER] == hyper[best, config.OPTIMIZER]]
            moments[kin, :, cols] = moments[best, :, cols]
            steps[kin] = steps[best]
            if self.options["explore"]:
                self._explore(best, losers, epoch, before)

    def _explore(self, source: int, targets: np.ndarray, epoch: int, before: np.ndarray) -> None:
        """PBT's explore: each target, which has just copied the source's weights, optimizer state
        and hyperparameters, has its ``lr``, ``l2`` and ``momentum`` multiplied by 0.8 or 1.2; every
        copy goes to ``history.exploits`` (``before``: the hyperparameter rows before the copy)."""
        hyper = self.ctx.hyper
        rng = np.random.default_rng((self.seed, EXPLORE_KEY, epoch))
        columns = [config.HYPER_COLUMNS.index(name) for name in EXPLORED]
        for target in targets:
            old = {name: float(before[target, c]) for name, c in zip(EXPLORED, columns)}
            factors = rng.choice(EXPLORE_FACTORS, size=len(EXPLORED))
            for name, c, factor in zip(EXPLORED, columns, factors):
                value = float(hyper[source, c]) * factor
                hyper[target, c] = min(value, MOMENTUM_CAP) if name == "momentum" else value
            new = {name: float(hyper[target, c]) for name, c in zip(EXPLORED, columns)}
            self.history.exploits.append(Exploit(epoch, source, int(target), old, new))
