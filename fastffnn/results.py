"""What a run returns: the trained ensemble, its history and its timing."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .network import Ensemble


def accuracy(proba: np.ndarray, T: np.ndarray) -> float:
    """Accuracy of probabilities (n, K) against encoded targets T (n, K); K = 1 is binary."""
    if T.shape[1] == 1:
        return float(np.mean((proba[:, 0] > 0.5) == (T[:, 0] > 0.5)))
    return float(np.mean(np.argmax(proba, axis=1) == np.argmax(T, axis=1)))


@dataclass
class History:
    """``losses`` (N, epochs): each instance's mean training loss per epoch.  Per sync round:
    ``sync_epochs`` (R,), ``global_loss`` (R,) (mean over instances, reduced at the barrier),
    ``val_accuracy`` (R, N) and ``ensemble_val_accuracy`` (R,) when validation data was given."""

    losses: np.ndarray
    sync_epochs: list = field(default_factory=list)
    global_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    ensemble_val_accuracy: list = field(default_factory=list)

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

    def finish(self, losses: np.ndarray) -> "History":
        """Freeze the lists into arrays, with ``losses`` copied out of the run's shared arrays."""
        return History(losses.copy(), np.array(self.sync_epochs), np.array(self.global_loss),
                       np.array(self.val_accuracy), np.array(self.ensemble_val_accuracy))


@dataclass
class Timing:
    """``wall`` seconds of the run (compilation excluded); per instance, ``compute`` seconds in
    span kernels and ``barrier_wait`` seconds its worker spent at the barrier."""

    wall: float
    compute: np.ndarray
    barrier_wait: np.ndarray


@dataclass
class TrainResult:
    """``ensemble`` (predict, predict_proba, score, ``ensemble[i]``), ``history``, ``timing``,
    ``config`` (the run's settings) and ``hyperparams`` (each instance's, at the end)."""

    ensemble: Ensemble
    history: History
    timing: Timing
    config: dict
    hyperparams: list

    def __repr__(self) -> str:
        final = self.history.losses[:, -1]
        return (f"TrainResult({len(self.ensemble)} instances, {self.history.losses.shape[1]} epochs, "
                f"backend={self.config['backend']!r}, final loss {final.min():.4g}..{final.max():.4g}, "
                f"wall {self.timing.wall:.3g} s)")
