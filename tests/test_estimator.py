"""``FFNNEnsembleClassifier`` is a scikit-learn classifier: every estimator check passes (none
expected to fail), and it gives exactly what ``fastffnn.train`` gives."""
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks

import fastffnn as ff
from fastffnn import FFNNEnsembleClassifier

CHEAP = dict(hidden=(16,), epochs=200, instances=2)


@parametrize_with_checks([FFNNEnsembleClassifier(**CHEAP)])      # the default backend, threads
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_sklearn_estimator_checks_other_settings():
    """Serial backend, float32, tanh, averaging all layers: every check again, as one test."""
    clf = FFNNEnsembleClassifier(**CHEAP, backend="serial", activation="tanh", sync="average", sync_every=50,
                                 sync_layers="all", dtype="float32")
    results = check_estimator(clf, on_fail=None)
    failed = [(r["check_name"], r["exception"]) for r in results if r["status"] == "failed"]
    assert not failed
    assert sum(r["status"] == "passed" for r in results) >= 50


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=90, centers=3, n_features=4, cluster_std=1.5, random_state=0)
    return StandardScaler().fit_transform(X), y


def test_defaults_are_sensible():
    clf = FFNNEnsembleClassifier()
    params = clf.get_params()
    assert params["instances"] == 4 and params["backend"] == "threads"
    assert params["hidden"] == (32, 32) and params["epochs"] >= 100 and params["timeout"] > 0
    assert set(params) == {"hidden", "activation", "instances", "hyperparams", "epochs", "backend", "workers",
                           "kernel", "sync", "sync_every", "sync_layers", "sync_options", "init", "dtype", "seed",
                           "timeout"}
    assert "FFNNEnsembleClassifier()" == repr(clf)


@pytest.mark.parametrize("labels", [np.array(["setosa", "versicolor", "virginica"]), np.array([10, -3, 7])],
                         ids=["str", "int"])
def test_multiclass_fit_predict(blobs, labels):
    X, y = blobs
    y_named = labels[y]
    clf = FFNNEnsembleClassifier(**CHEAP)
    assert clf.fit(X, y_named) is clf
    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    assert clf.n_features_in_ == 4 and not hasattr(clf, "feature_names_in_")
    proba = clf.predict_proba(X)
    assert proba.shape == (90, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[np.argmax(proba, axis=1)])
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))
    assert clf.score(X, y_named) >= 0.9
    assert clf.history_.losses.shape == (2, 200)
    assert np.all(clf.history_.losses[:, -1] < clf.history_.losses[:, 0])


def test_binary_matches_train(blobs):
    """The estimator is train() and nothing else: same weights, same predictions, same history."""
    X, y = blobs
    Xb, yb = X[y != 2], np.where(y[y != 2] == 1, "spam", "ham")
    hp = ff.vary(lr=[0.02, 0.1], momentum=0.5)
    clf = FFNNEnsembleClassifier(**{**CHEAP, "instances": None}, hyperparams=hp, sync="weighted",
                                 sync_every=40, seed=3).fit(Xb, yb)
    res = ff.train(Xb, yb, **{**CHEAP, "instances": None}, hyperparams=hp, sync="weighted", sync_every=40,
                   seed=3, backend="threads")
    np.testing.assert_array_equal(clf.ensemble_.params, res.ensemble.params)
    np.testing.assert_array_equal(clf.history_.losses, res.history.losses)
    np.testing.assert_array_equal(clf.predict(Xb), res.ensemble.predict(Xb))
    assert clf.predict_proba(Xb).shape == (len(yb), 2)
    assert [h.lr for h in clf.result_.hyperparams] == [0.02, 0.1]
    assert clf.result_.config["sync"] == "weighted" and len(clf.ensemble_) == 2
    assert clf.score(Xb, yb) == res.ensemble.score(Xb, yb) >= 0.9


def test_adam_is_a_hyperparameter_like_any_other(blobs):
    X, y = blobs
    clf = FFNNEnsembleClassifier(**CHEAP, hyperparams=ff.HyperParams(optimizer="adam", lr=0.01)).fit(X, y)
    assert [h.optimizer for h in clf.result_.hyperparams] == ["adam", "adam"]
    assert clf.score(X, y) >= 0.9 and (clf.result_.state.moments[:, 1] > 0).any()
    assert clone(clf).get_params()["hyperparams"] == ff.HyperParams(optimizer="adam", lr=0.01)


def test_seed_controls_the_model(blobs):
    X, y = blobs
    a = FFNNEnsembleClassifier(**CHEAP, seed=1).fit(X, y)
    b = clone(a).fit(X, y)
    c = clone(a).set_params(seed=2).fit(X, y)
    np.testing.assert_array_equal(a.ensemble_.params, b.ensemble_.params)
    assert not np.array_equal(a.ensemble_.params, c.ensemble_.params)


def test_pickle_round_trip(blobs):
    X, y = blobs
    clf = FFNNEnsembleClassifier(**CHEAP).fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(back.ensemble_[1].weights[0], clf.ensemble_[1].weights[0])
    assert back.get_params() == clf.get_params()


def test_in_a_pipeline_with_cross_validation(blobs):
    X, y = blobs
    pipe = make_pipeline(StandardScaler(), FFNNEnsembleClassifier(hidden=(8,), epochs=100, instances=2))
    scores = cross_val_score(pipe, X * 50 + 3, y, cv=3)
    assert scores.shape == (3,) and scores.min() >= 0.8


def test_refit_on_other_data_resets(blobs):
    X, y = blobs
    clf = FFNNEnsembleClassifier(**CHEAP).fit(X, y)
    clf.fit(X[:, :2], y % 2)
    assert clf.n_features_in_ == 2 and list(clf.classes_) == [0, 1]
    assert clf.predict(X[:, :2]).shape == (90,)
    with pytest.raises(ValueError, match="X has 4 features, but FFNNEnsembleClassifier is expecting 2"):
        clf.predict(X)


def test_feature_names_from_a_dataframe(blobs):
    pd = pytest.importorskip("pandas")
    X, y = blobs
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = FFNNEnsembleClassifier(**CHEAP).fit(df, y)
    np.testing.assert_array_equal(clf.feature_names_in_, ["a", "b", "c", "d"])
    np.testing.assert_array_equal(clf.predict(df), clf.predict(X))
    with pytest.raises(ValueError, match="The feature names should match those that were passed during fit"):
        clf.predict(df.rename(columns={"a": "z"}))
