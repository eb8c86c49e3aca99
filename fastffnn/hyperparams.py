"""Per-instance hyperparameters and ``vary`` to build N of them."""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, fields, replace
from numbers import Integral, Real

import numpy as np

from .kernels.config import ADAM, BATCH_SIZE, HYPER_COLUMNS, OPTIMIZER, SGD

# The optimizers, by name: the kernels' run-time switch reads the code from the row.
OPTIMIZERS = {"sgd": SGD, "adam": ADAM}
_OPTIMIZER_NAMES = {code: name for name, code in OPTIMIZERS.items()}


@dataclass(frozen=True)
class HyperParams:
    """Hyperparameters of one instance.

    Parameters
    ----------
    lr : float
        Learning rate, > 0.
    l2 : float
        L2 penalty on the weights (not the biases), >= 0.  Its gradient is added to the loss's
        before the optimizer step, for Adam too (coupled, as ``torch.optim.Adam``'s
        ``weight_decay``; not AdamW's decoupled decay).
    optimizer : {"sgd", "adam"}
        "sgd": gradient descent with classical momentum (``momentum``).  "adam": Adam (Kingma & Ba
        2015) with ``beta1``, ``beta2``, ``eps``, as ``torch.optim.Adam`` computes it; its bias
        corrections count each instance's own steps.
    momentum : float
        SGD's classical momentum in [0, 1).
    beta1, beta2 : float
        Adam's decay rates of the first and second moment estimates, in [0, 1).
    eps : float
        Adam's term added to the bias-corrected sqrt of the second moment, > 0.
    batch_size : int or None
        Samples per step; None trains on the full batch each epoch (the report's choice).
    penalty : float
        The report's case 3, written ∂: the output activation is sigmoid(∂ z) (softmax(∂ z)), which
        sharpens reward and penalty in the cross-entropy. 1 is the plain network.
    seed : int or None
        Seed of this instance's initial weights and batch order.  Instance k draws from child k
        (``numpy.random.SeedSequence.spawn``) of this seed, or of the run seed when None, so one
        HyperParams with a seed shared by all instances still gives each a different start.
    """

    lr: float = 0.05
    l2: float = 1e-3
    optimizer: str = "sgd"
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    batch_size: int | None = None
    penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        constraints = _constraints()
        validate(constraints, {name: getattr(self, name) for name in constraints}, "HyperParams")

    def row(self, n_samples: int) -> np.ndarray:
        """The (H,) float row the kernels read (``kernels.config.HYPER_COLUMNS``); the full batch
        is stored as ``n_samples``, the optimizer as its code."""
        values = {name: getattr(self, name) for name in HYPER_COLUMNS}
        values.update(batch_size=n_samples if self.batch_size is None else min(self.batch_size, n_samples),
                      optimizer=OPTIMIZERS[self.optimizer])
        return np.array([values[name] for name in HYPER_COLUMNS], dtype=np.float64)

    @classmethod
    def from_row(cls, row: np.ndarray, n_samples: int, seed: int | None) -> "HyperParams":
        """The hyperparameters a run actually used, read back from its (H,) row.  Not validated
        again: every value was checked when it was set, and the run's result must come back."""
        values = {name: float(row[c]) for c, name in enumerate(HYPER_COLUMNS)}
        batch = int(row[BATCH_SIZE])
        values.update(batch_size=None if batch >= n_samples else batch,
                      optimizer=_OPTIMIZER_NAMES[int(row[OPTIMIZER])], seed=seed)
        obj = cls.__new__(cls)
        for name, value in values.items():
            object.__setattr__(obj, name, value)    # frozen dataclass: bypass __init__'s checks
        return obj


_PASSED: set = set()        # (caller, name, type, value) of plain scalars that passed ``validate``
_SCALARS = (bool, int, float, str, type(None))


def validate(constraints: dict, params: dict, caller: str) -> None:
    """scikit-learn's ``validate_parameter_constraints`` (so its wording for every error),
    remembering the plain scalars that have passed: checking ten parameters anew took 30-65 µs
    of every ``HyperParams()`` and ``train`` call."""
    from sklearn.utils._param_validation import validate_parameter_constraints
    keys = {name: (caller, name, type(value), value) for name, value in params.items()
            if type(value) in _SCALARS and value == value}      # NaN never passes, nor is kept
    todo = {name: value for name, value in params.items() if keys.get(name) not in _PASSED}
    if todo:
        validate_parameter_constraints(constraints, todo, caller_name=caller)
        if len(_PASSED) > 4096:
            _PASSED.clear()
        _PASSED.update(keys[name] for name in todo if name in keys)


@functools.cache
def _constraints() -> dict:
    """sklearn-style constraints, checked when a HyperParams is made (so also by ``vary`` and
    ``replace``): "The 'lr' parameter of HyperParams must be a float in the range (0.0, inf). Got 0
    instead."  Built on first use: worker processes never validate, and skip importing sklearn."""
    from sklearn.utils._param_validation import Interval, StrOptions
    return {
        "lr": [Interval(Real, 0, None, closed="neither")],
        "l2": [Interval(Real, 0, None, closed="left")],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "beta1": [Interval(Real, 0, 1, closed="left")],
        "beta2": [Interval(Real, 0, 1, closed="left")],
        "eps": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "penalty": [Interval(Real, 0, None, closed="neither")],
        "seed": [Interval(Integral, 0, None, closed="left"), None],
    }

FIELDS = tuple(f.name for f in fields(HyperParams))


def vary(base: HyperParams | None = None, grid: bool = False, **values) -> list[HyperParams]:
    """Build a list of HyperParams, one per instance.

    ``vary(lr=[0.01, 0.05, 0.1], l2=1e-4)`` gives three instances: lists are zipped (they must have
    equal lengths) and scalars are shared.  ``grid=True`` takes the Cartesian product of the lists
    instead.  Fields not named come from ``base`` (default ``HyperParams()``).
    """
    base = HyperParams() if base is None else base
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise TypeError(f"vary() got unknown hyperparameter(s) {unknown}; expected some of {list(FIELDS)}.")
    lists = {k: list(v) for k, v in values.items() if isinstance(v, (list, tuple, np.ndarray))}
    scalars = {k: v for k, v in values.items() if k not in lists}
    if grid:
        combos = [dict(zip(lists, combo)) for combo in itertools.product(*lists.values())]
    else:
        lengths = {k: len(v) for k, v in lists.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"vary() needs lists of equal length to zip them; got lengths {lengths}. "
                             f"Pass grid=True for every combination.")
        n = next(iter(lengths.values()), 1)
        combos = [{k: v[i] for k, v in lists.items()} for i in range(n)]
    return [replace(base, **scalars, **combo) for combo in combos]
