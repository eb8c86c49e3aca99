"""fastffnn: train many instances of a feed-forward network in parallel, on one shared dataset,
exchanging what they learn at a barrier.  Numba nogil kernels; serial, threads, processes and prange
backends with bit-identical results."""
from . import datasets
from .api import train
from .estimator import FFNNEnsembleClassifier
from .errors import InstanceFailed, NonFiniteError, SyncTimeout
from .hyperparams import HyperParams, vary
from .network import Ensemble, Instance
from .results import History, Timing, TrainResult

__version__ = "0.1.0"

__all__ = ["datasets", "train", "FFNNEnsembleClassifier", "HyperParams", "vary", "InstanceFailed",
           "NonFiniteError", "SyncTimeout", "Ensemble", "Instance", "History", "Timing", "TrainResult"]
