"""``FFNNEnsembleClassifier``: ``fastffnn.train`` as a scikit-learn classifier."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .api import CONSTRAINTS, train

# The parameters the estimator passes on to ``train``, with train's constraints.
PARAMETERS = ("hidden", "activation", "instances", "hyperparams", "epochs", "backend", "workers", "kernel",
              "sync", "sync_every", "sync_layers", "sync_options", "init", "dtype", "seed", "timeout")


class FFNNEnsembleClassifier(ClassifierMixin, BaseEstimator):
    """An ensemble of feed-forward networks trained in parallel by ``fastffnn.train``.

    ``instances`` copies of one network train side by side on the same data, each with its own
    hyperparameters and random start, optionally exchanging weights every ``sync_every`` epochs;
    the ensemble predicts with the mean of their class probabilities.  Two classes train a
    sigmoid output, more a softmax output.  Standardise the features first (for example with
    ``sklearn.preprocessing.StandardScaler`` in a pipeline).

    Parameters
    ----------
    hidden : tuple of int, default=(32, 32)
        Hidden layer widths, the same for every instance.
    activation : {"relu", "leaky_relu", "tanh", "sigmoid"}, default="relu"
        Hidden activation.
    instances : int or None, default=4
        Number of networks N.  None takes the length of ``hyperparams`` when it is a list, else 8.
    hyperparams : HyperParams, list of HyperParams or None, default=None
        One ``fastffnn.HyperParams`` for all instances, or one per instance (see
        ``fastffnn.vary``; then ``instances`` must equal its length or be None).  None means
        ``HyperParams()``.
    epochs : int, default=1000
        Epochs each instance trains.
    backend : {"serial", "threads", "processes", "prange", "ray"}, default="threads"
        Where instances run; every backend gives bit-identical results.
    workers : int or None, default=None
        Threads or processes used (default: cores, at most N).
    kernel : {"numba", "numba-gil", "numpy"}, default="numba"
        Compute kernels: nogil Numba, Numba holding the GIL, or plain numpy.
    sync : {"none", "average", "align", "weighted", "best"}, default="none"
        What instances exchange every ``sync_every`` epochs.
    sync_every : int, default=100
        Epochs between sync points.
    sync_layers : {"all", "last"}, default="all"
        Layers a sync touches.
    init : {"independent", "shared"}, default="independent"
        How instances start: each from its own draw, or all from instance 0's weights.
    sync_options : dict or None, default=None
        ``temperature`` of "weighted", ``quantile`` and ``explore`` (PBT) of "best"; see
        ``fastffnn.train``.
    dtype : {"float64", "float32"}, default="float64"
        Floating point type of data and weights.
    seed : int, default=0
        Run seed; each instance's seed is spawned from it.  Fitting twice with the same seed
        gives the same model.
    timeout : float or None, default=60.0
        The stall watchdog: ``fit`` raises ``fastffnn.SyncTimeout`` when no epoch has completed
        anywhere for this many seconds.  A run that keeps progressing never fails, however long
        its rounds.  None: no watchdog.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels seen in ``fit``, sorted.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen in ``fit``; only when ``X`` had string column names.
    result_ : fastffnn.TrainResult
        The run: ensemble, history, timing, config and final hyperparameters.
    ensemble_ : fastffnn.Ensemble
        The trained networks (``ensemble_[i].weights``, ``.biases``).
    history_ : fastffnn.History
        Per-instance loss per epoch and the global loss per sync.

    See Also
    --------
    fastffnn.train : The function this estimator wraps.
    sklearn.neural_network.MLPClassifier : One network, trained by scikit-learn.

    Examples
    --------
    >>> import fastffnn as ff
    >>> X_train, X_test, y_train, y_test = ff.datasets.breast_cancer(seed=0)
    >>> clf = ff.FFNNEnsembleClassifier(instances=4, epochs=300).fit(X_train, y_train)
    >>> clf.score(X_test, y_test) > 0.9
    True
    """

    _parameter_constraints: dict = {name: CONSTRAINTS[name] for name in PARAMETERS}

    def __init__(self, hidden=(32, 32), activation="relu", instances=4, hyperparams=None, epochs=1000,
                 backend="threads", workers=None, kernel="numba", sync="none", sync_every=100,
                 sync_layers="all", sync_options=None, init="independent", dtype="float64", seed=0,
                 timeout=60.0):
        self.hidden = hidden
        self.activation = activation
        self.instances = instances
        self.hyperparams = hyperparams
        self.epochs = epochs
        self.backend = backend
        self.workers = workers
        self.kernel = kernel
        self.sync = sync
        self.sync_every = sync_every
        self.sync_layers = sync_layers
        self.sync_options = sync_options
        self.init = init
        self.dtype = dtype
        self.seed = seed
        self.timeout = timeout

    def fit(self, X, y):
        """Train the ensemble on (X, y).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, standardised.
        y : array-like of shape (n_samples,)
            Class labels (at least two classes; any labels ``numpy.unique`` can sort).

        Returns
        -------
        self : FFNNEnsembleClassifier
            The fitted estimator.
        """
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=self.dtype, order="C", ensure_min_samples=2)
        check_classification_targets(y)
        self.result_ = train(X, y, **self.get_params(deep=False))
        self.ensemble_ = self.result_.ensemble
        self.history_ = self.result_.history
        self.classes_ = self.ensemble_.classes_
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Mean class probabilities of the instances.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``; rows sum to 1.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=self.dtype, order="C")
        return self.ensemble_.predict_proba(X)

    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithm of ``predict_proba``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """Class of highest mean probability (so always ``classes_[argmax(predict_proba)]``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
