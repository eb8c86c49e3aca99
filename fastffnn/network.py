"""The network: topology, flat parameter layout, initialisation, and the trained ensemble."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .kernels import config, n_params, predict_proba
from .kernels.layout import layer_offset

ACTIVATIONS = {"relu": config.RELU, "leaky_relu": config.LEAKY_RELU, "tanh": config.TANH,
               "sigmoid": config.SIGMOID}


@dataclass(frozen=True)
class Topology:
    """Layer sizes (F, hidden..., K) and the hidden activation, shared by every instance."""

    sizes: tuple
    activation: str

    @property
    def sizes_array(self) -> np.ndarray:
        return np.asarray(self.sizes, dtype=np.int64)

    @property
    def act_code(self) -> int:
        return ACTIVATIONS[self.activation]

    @property
    def binary(self) -> bool:
        """Whether the output is one sigmoid (two classes), not a softmax over K; the kernels are
        compiled for one or the other."""
        return bool(self.sizes[-1] == 1)

    @property
    def n_params(self) -> int:
        return n_params(self.sizes)

    def layer_slices(self) -> list:
        """(weight slice, bias slice) of each layer inside the flat (P,) buffer."""
        return list(self._slices)

    @cached_property
    def _slices(self) -> tuple:
        # computed once: every instance's views take them, twice a run (a short run's fixed cost)
        out = []
        for l, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            w = slice(layer_offset(self.sizes, l), layer_offset(self.sizes, l) + fan_in * fan_out)
            out.append((w, slice(w.stop, w.stop + fan_out)))
        return tuple(out)

    def views(self, flat: np.ndarray) -> tuple[list, list]:
        """Per-layer weight (fan_in, fan_out) and bias (fan_out,) views of one flat buffer."""
        weights = [flat[w].reshape(i, o) for (w, _), i, o in zip(self._slices, self.sizes[:-1], self.sizes[1:])]
        return weights, [flat[b] for _, b in self._slices]


# How instances start: each from its own random draw, or all from instance 0's (then only their
# batch order and hyperparameters differ).
INITS = ("independent", "shared")


def init_params(topology: Topology, seeds: list, dtype, init="independent") -> tuple[np.ndarray, np.ndarray]:
    """(N, P) initial parameters and (N, 1) uint64 batch-order generator states.

    Weights ~ N(0, 2/fan_in) (He) for the ReLU family, N(0, 2/(fan_in+fan_out)) (Glorot) otherwise;
    biases 0.  ``seeds`` holds one ``numpy.random.SeedSequence`` per instance; with ``init="shared"``
    every instance takes instance 0's weights (each keeps its own batch-order generator); an (N, P)
    array as ``init`` gives the parameters themselves.
    """
    params = np.zeros((len(seeds), topology.n_params), dtype=dtype)
    rng_state = np.empty((len(seeds), 1), dtype=np.uint64)
    he = topology.activation in ("relu", "leaky_relu")
    for k, seq in enumerate(seeds):
        rng = np.random.default_rng(seq)
        weights, _ = topology.views(params[k])
        for w in weights:
            fan_in, fan_out = w.shape
            w[...] = rng.normal(0.0, np.sqrt(2.0 / (fan_in if he else fan_in + fan_out)), w.shape)
        rng_state[k, 0] = seq.generate_state(1, dtype=np.uint64)[0]
    if not isinstance(init, str):
        params[...] = init
    elif init == "shared":
        params[1:] = params[0]
    return params, rng_state


class _Classifier:
    """predict and score from ``predict_proba`` and ``classes_``."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Mean accuracy on (X, y)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))


class Instance(_Classifier):
    """One trained network: ``weights`` (fan_in, fan_out) and ``biases`` per layer, views of its
    flat parameter row (made on first use: a short run's result need not pay for them)."""

    def __init__(self, topology: Topology, params: np.ndarray, hyperparams, classes: np.ndarray):
        self.topology, self.params, self.hyperparams, self.classes_ = topology, params, hyperparams, classes

    @cached_property
    def _views(self) -> tuple[list, list]:
        return self.topology.views(self.params)

    @property
    def weights(self) -> list:
        return self._views[0]

    @property
    def biases(self) -> list:
        return self._views[1]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (n, n_classes) for standardised X (n, F)."""
        from sklearn.utils.validation import check_array     # not at import: workers never need it
        X = check_array(X, dtype=self.params.dtype, order="C", input_name="X")
        if X.shape[1] != self.topology.sizes[0]:
            raise ValueError(f"X has {X.shape[1]} features, but the network is expecting "
                             f"{self.topology.sizes[0]} features as input.")
        K = self.topology.sizes[-1]
        proba = np.empty((X.shape[0], K), dtype=self.params.dtype)
        predict_proba(proba, X, self.params, self.topology.sizes_array, self.topology.act_code,
                      self.params.dtype.type(self.hyperparams.penalty), self.topology.binary)
        return np.hstack([1.0 - proba, proba]) if K == 1 else proba

    def __repr__(self) -> str:
        return f"Instance(sizes={self.topology.sizes}, activation={self.topology.activation!r}, {self.hyperparams})"


class Ensemble(_Classifier):
    """All trained instances; predicts with the mean of their probabilities."""

    def __init__(self, topology: Topology, params: np.ndarray, hyperparams: list, classes: np.ndarray):
        self.topology, self.params, self.classes_ = topology, params, classes
        self.instances = [Instance(topology, params[k], hp, classes) for k, hp in enumerate(hyperparams)]

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, k: int) -> Instance:
        return self.instances[k]

    def __iter__(self):
        return iter(self.instances)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        probas = [inst.predict_proba(X) for inst in self.instances]
        return np.mean(probas, axis=0)

    def __repr__(self) -> str:
        return f"Ensemble({len(self)} instances, sizes={self.topology.sizes}, activation={self.topology.activation!r})"
