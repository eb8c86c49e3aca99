"""What a run returns: the trained ensemble, its history and timing, and the state that
continuing it needs (``fastffnn.resume``)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .network import Ensemble


def accuracy(proba: np.ndarray, T: np.ndarray) -> float:
    """Accuracy of probabilities (n, K) against encoded targets T (n, K); K = 1 is binary."""
    if T.shape[1] == 1:
        return float(np.mean((proba[:, 0] > 0.5) == (T[:, 0] > 0.5)))
    return float(np.mean(np.argmax(proba, axis=1) == np.argmax(T, axis=1)))


@dataclass(frozen=True)
class Exploit:
    """One copy made by ``sync="best"`` with ``sync_options={"explore": True}`` (PBT): at sync
    ``epoch``, instance ``target`` took the weights, momentum and hyperparameters of ``source``;
    ``old`` and ``new`` are the target's ``lr``, ``l2`` and ``momentum`` before and after (the
    source's, each multiplied by 0.8 or 1.2)."""

    epoch: int
    source: int
    target: int
    old: dict
    new: dict


@dataclass
class History:
    """``losses`` (N, epochs): each instance's mean training loss per epoch.  Per sync point:
    ``sync_epochs`` (R,), ``global_loss`` (R,) (mean over instances, reduced at the barrier),
    ``val_accuracy`` (R, N) and ``ensemble_val_accuracy`` (R,) when validation data was given.
    ``snapshots``: {epoch: (N, P) parameters} at the epochs asked for with ``train(snapshots=...)``;
    epoch 0 is the initial weights, and a snapshot at a sync point is taken after the sync (the
    weights the next epoch starts from).  ``exploits``: the ``Exploit`` copies of PBT's explore, in
    order."""

    losses: np.ndarray
    sync_epochs: list = field(default_factory=list)
    global_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    ensemble_val_accuracy: list = field(default_factory=list)
    snapshots: dict = field(default_factory=dict)
    exploits: list = field(default_factory=list)

    def record_sync(self, epoch: int, global_loss: float, probas: np.ndarray | None,
                    T_val: np.ndarray | None) -> np.ndarray | None:
        self.sync_epochs.append(epoch)
        self.global_loss.append(global_loss)
        if T_val is None:
            return None
        acc = np.array([accuracy(p, T_val) for p in probas])
        self.val_accuracy.append(acc)
        self.ensemble_val_accuracy.append(accuracy(probas.mean(axis=0), T_val))
        return acc

    def continued(self, losses: np.ndarray) -> "History":
        """A History that goes on from this one's records, with ``losses`` the run's (N, epochs)
        array (this one's epochs already copied into it)."""
        return History(losses, list(self.sync_epochs), list(self.global_loss), list(self.val_accuracy),
                       list(self.ensemble_val_accuracy), dict(self.snapshots), list(self.exploits))

    def finish(self, losses: np.ndarray) -> "History":
        """Freeze the lists into arrays, with ``losses`` copied out of the run's shared arrays."""
        return History(losses.copy(), np.array(self.sync_epochs), np.array(self.global_loss),
                       np.array(self.val_accuracy), np.array(self.ensemble_val_accuracy), dict(self.snapshots),
                       list(self.exploits))


@dataclass
class Timing:
    """``wall`` seconds of the run (compilation excluded); per instance, ``compute`` seconds in
    span kernels and ``barrier_wait`` seconds its worker spent at the barrier.  A resumed run's
    timing adds up all its parts."""

    wall: float
    compute: np.ndarray
    barrier_wait: np.ndarray


@dataclass
class TrainState:
    """What continuing a run needs besides its parameters and history: per instance, the
    optimizer's state -- ``moments`` (N, 2, P) in the run's dtype (SGD's momentum velocity in
    ``moments[:, 0]``; Adam's first and second moment estimates) and ``steps`` (N,) int64, the
    optimizer steps taken (Adam's bias corrections count them) -- the batch-order generator state
    ``rng`` (N, 1) uint64, the current sample ``order`` (N, n) int64 and the ``hyper`` rows (N, H)
    the kernels read, in the run's dtype; the ``target_epochs`` the run was started for; and sha256
    digests of the training data (X, encoded targets and classes) and of the validation data (None
    without), so that a resume on other data is refused."""

    moments: np.ndarray
    steps: np.ndarray
    rng: np.ndarray
    order: np.ndarray
    hyper: np.ndarray
    target_epochs: int
    data_sha256: str
    validation_sha256: str | None


@dataclass
class TrainResult:
    """``ensemble`` (predict, predict_proba, score, ``ensemble[i]``), ``history``, ``timing``,
    ``config`` (the run's settings; ``config["epochs"]`` is the epochs trained), ``hyperparams``
    (each instance's, at the end) and ``state`` (what ``fastffnn.resume`` continues from)."""

    ensemble: Ensemble
    history: History
    timing: Timing
    config: dict
    hyperparams: list
    state: TrainState | None = None

    def __repr__(self) -> str:
        final = self.history.losses[:, -1]
        return (f"TrainResult({len(self.ensemble)} instances, {self.history.losses.shape[1]} epochs, "
                f"backend={self.config['backend']!r}, final loss {final.min():.4g}..{final.max():.4g}, "
                f"wall {self.timing.wall:.3g} s)")
