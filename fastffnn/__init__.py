"""fastffnn: train many instances of a feed-forward network in parallel, on one shared dataset,
exchanging what they learn at a barrier.  Numba nogil kernels; serial, threads, processes and prange
backends with bit-identical results.  ``fastffnn.shutdown()`` closes the processes backend's warm
pool of workers (interpreter exit does too).  ``save``, ``load`` and ``resume`` write, read and
continue checkpoints (``fastffnn.checkpoint``); the ``fastffnn`` command is ``fastffnn.cli``."""
import importlib

from .errors import CheckpointError, InstanceFailed, NonFiniteError, SyncTimeout
from .hyperparams import HyperParams, vary
from .network import Ensemble, Instance
from .results import Exploit, History, Timing, TrainResult, TrainState

__version__ = "0.1.0"

# The parts built on scikit-learn load on first use, so a worker process (which imports this
# package to run its kernels) starts in a fraction of a second instead of importing sklearn.
_LAZY = {"train": "api", "resume": "api", "save": "checkpoint", "load": "checkpoint",
         "FFNNEnsembleClassifier": "estimator", "shutdown": "backends", "datasets": None}

__all__ = ["datasets", "train", "resume", "save", "load", "shutdown", "FFNNEnsembleClassifier", "HyperParams", "vary",
           "InstanceFailed", "NonFiniteError", "SyncTimeout", "CheckpointError", "Ensemble", "Instance", "History", "Exploit",
           "Timing", "TrainResult", "TrainState"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'fastffnn' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
