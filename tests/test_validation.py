"""Bad input is refused in the calling process, before any backend starts, with scikit-learn's
wording and the bad value named; valid but unusual input (F-order, read-only memmap, float32, int,
lists) trains exactly as the plain float64 C array does; N = 1 works.  RELIABILITY.md rows 14, 21, 22."""
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import fastffnn as ff
from fastffnn import api
from fastffnn import FFNNEnsembleClassifier, HyperParams, vary

FAST = dict(hidden=(4,), instances=2, epochs=3, backend="serial")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    assert 5 < y.sum() < 19
    return X, y


@pytest.fixture
def no_run(monkeypatch):
    """Fail the test if validation lets anything reach a backend."""
    def get_backend(name):
        pytest.fail(f"bad input reached get_backend({name!r}): it was not validated first")
    monkeypatch.setattr(api, "get_backend", get_backend)


def fit_train(X, y, **kw):
    return ff.train(X, y, **{**FAST, **kw})


def fit_estimator(X, y, **kw):
    return FFNNEnsembleClassifier(**{**FAST, **kw}).fit(X, y)


ENTRY_POINTS = (fit_train, fit_estimator)


# --- X (row 21) ------------------------------------------------------------------------------------

def with_value(value, dtype=None):
    def make(X):
        X = X.astype(dtype) if dtype is not None else X.copy()
        X[3, 1] = value
        return X
    return make


BAD_X = {
    "nan": (with_value(np.nan), ValueError, r"^Input X contains NaN\."),
    "inf": (with_value(np.inf), ValueError, r"^Input X contains infinity or a value too large"),
    "-inf": (with_value(-np.inf), ValueError, r"^Input X contains infinity or a value too large"),
    "complex": (lambda X: X + 1j, ValueError, r"^Complex data not supported"),
    "object str": (with_value("abc", object), ValueError, r"could not convert string to float: 'abc'"),
    "object dict": (with_value({"a": 1}, object), TypeError, r"float\(\) argument must be .*not 'dict'"),
    "1-D": (lambda X: X[:, 0], ValueError, r"(?s)^Expected 2D array, got 1D array instead:.*Reshape your data"),
    "3-D": (lambda X: X[:, :, None], ValueError, r"Found array with dim 3"),
    "0 features": (lambda X: X[:, :0], ValueError,
                   r"^Found array with 0 feature\(s\) \(shape=\(24, 0\)\) while a minimum of 1 is required"),
}


@pytest.mark.parametrize("case", BAD_X)
def test_bad_X_is_refused(data, no_run, case):
    make, exc, pattern = BAD_X[case]
    X, y = data
    for fit in ENTRY_POINTS:
        with pytest.raises(exc, match=pattern):
            fit(make(X), y)


def test_too_few_samples(data, no_run):
    X, y = data
    for fit in ENTRY_POINTS:
        for n in (0, 1):
            with pytest.raises(ValueError, match=rf"^Found array with {n} sample\(s\) \(shape=\({n}, 3\)\) "
                                                 rf"while a minimum of 2 is required"):
                fit(X[:n], y[:n])


# --- y (row 22) ------------------------------------------------------------------------------------

def y_with_nan(y):
    y = y.astype(float)
    y[5] = np.nan
    return y


BAD_Y = {
    "length": (lambda y: y[:-1], r"^Found input variables with inconsistent numbers of samples: \[24, 23\]"),
    "nan": (y_with_nan, r"^Input y contains NaN\."),
    "one class": (lambda y: np.full_like(y, 7),
                  r"at least 2 classes, but it contains only one class: 7\.$"),
    "one string class": (lambda y: np.full(len(y), "spam"), r"only one class: 'spam'\.$"),
    "continuous": (lambda y: np.linspace(0, 1, len(y)), r"^Unknown label type: continuous\."),
    "2 columns": (lambda y: np.c_[y, y], r"^y should be a 1d array, got an array of shape \(24, 2\) instead"),
}


@pytest.mark.parametrize("case", BAD_Y)
def test_bad_y_is_refused(data, no_run, case):
    make, pattern = BAD_Y[case]
    X, y = data
    for fit in ENTRY_POINTS:
        with pytest.raises(ValueError, match=pattern):
            fit(X, make(y))


def test_y_none_is_refused_by_the_estimator(data):
    X, _ = data
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        FFNNEnsembleClassifier(**FAST).fit(X, None)


# --- parameters (row 14) ----------------------------------------------------------------------------

BAD_PARAMS = {
    "epochs": ([0, -3, 2.5], r"an int in the range \[1, inf\)"),
    "instances": ([0, -1, 1.0], r"an int in the range \[1, inf\) or None"),
    "sync_every": ([0, -10], r"an int in the range \[1, inf\)"),
    "timeout": ([0, -1.0], r"a float in the range \(0(\.0)?, inf\) or None"),
    "workers": ([0], r"an int in the range \[1, inf\) or None"),
    "seed": ([-1], r"an int in the range \[0, inf\)"),
    "activation": (["relux"], r"a str among \{.*'relu'.*\}"),
    "backend": (["gpu"], r"a str among \{.*'threads'.*\}"),
    "kernel": (["cuda"], r"a str among \{.*'numba'.*\}"),
    "sync": (["avg"], r"a str among \{.*'average'.*\}"),
    "sync_layers": (["first"], r"a str among \{.*'last'.*\}"),
    "dtype": (["float16"], r"a str among \{.*'float64'.*\}"),
}


@pytest.mark.parametrize("name", BAD_PARAMS)
def test_bad_parameter(data, no_run, name):
    X, y = data
    values, allowed = BAD_PARAMS[name]
    for value in values:
        with pytest.raises(ValueError, match=rf"^The '{name}' parameter of train must be {allowed}\. "
                                             rf"Got {value!r} instead\.$"):
            fit_train(X, y, **{name: value})
        clf = FFNNEnsembleClassifier(**{**FAST, name: value})     # __init__ only stores
        assert getattr(clf, name) == value
        with pytest.raises(ValueError, match=rf"^The '{name}' parameter of FFNNEnsembleClassifier must be "
                                             rf"{allowed}\. Got {value!r} instead\.$"):
            clf.fit(X, y)


def test_bad_hidden(data, no_run):
    X, y = data
    with pytest.raises(ValueError, match=r"^The 'hidden' parameter of train must be a tuple of ints >= 1\. "
                                         r"Got \(4, 0\) instead\."):
        fit_train(X, y, hidden=(4, 0))


BAD_HYPERPARAMS = {
    "lr": ([0, -0.1, float("nan"), "fast"], r"a float in the range \(0\.0, inf\)"),
    "l2": ([-1e-4], r"a float in the range \[0\.0, inf\)"),
    "optimizer": (["adamw", "SGD", 1], r"a str among \{.*'adam'.*\}"),
    "momentum": ([1, 1.5, -0.1], r"a float in the range \[0\.0, 1\.0\)"),
    "beta1": ([1, 1.5, -0.1], r"a float in the range \[0\.0, 1\.0\)"),
    "beta2": ([1.0, -1e-3], r"a float in the range \[0\.0, 1\.0\)"),
    "eps": ([0, -1e-8, "tiny"], r"a float in the range \(0\.0, inf\)"),
    "batch_size": ([0, 8.0], r"an int in the range \[1, inf\) or None"),
    "penalty": ([0, -2.0], r"a float in the range \(0\.0, inf\)"),
    "seed": ([-1], r"an int in the range \[0, inf\) or None"),
}


@pytest.mark.parametrize("field", BAD_HYPERPARAMS)
def test_bad_hyperparams(field):
    values, allowed = BAD_HYPERPARAMS[field]
    for value in values:
        pattern = rf"^The '{field}' parameter of HyperParams must be {allowed}\. Got {value!r} instead\.$"
        with pytest.raises(ValueError, match=pattern):
            HyperParams(**{field: value})
        with pytest.raises(ValueError, match=pattern):      # vary builds through the same checks
            vary(**{field: [0.05, value] if field == "lr" else value})


def test_valid_hyperparams_edges():
    hp = HyperParams(lr=1e-9, l2=0.0, momentum=0.0, batch_size=1, penalty=1e-3, seed=0)
    assert (hp.lr, hp.momentum, hp.batch_size) == (1e-9, 0.0, 1)
    assert [h.lr for h in vary(lr=np.array([0.1, 0.2]), batch_size=np.int64(4))] == [0.1, 0.2]


def test_a_value_that_passed_does_not_pass_an_equal_one_of_another_type(data):
    """Values that passed once are not checked again (hyperparams.validate), but 8 and 8.0, or
    False and 0, hash alike: each must still be checked as itself."""
    assert HyperParams(batch_size=8).batch_size == 8
    with pytest.raises(ValueError, match=r"^The 'batch_size' parameter of HyperParams must be an int"):
        HyperParams(batch_size=8.0)
    X, y = data
    fit_train(X, y, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"^The 'epochs' parameter of train must be an int"):
        fit_train(X, y, epochs=1.0)
    with pytest.raises(ValueError, match=r"^The 'progress' parameter of train must be an instance of 'bool'"):
        fit_train(X, y, epochs=1, progress=0)


def test_the_optimizer_cannot_change_during_a_run(data):
    """A callback may change Adam's beta1, beta2 and eps, but not the optimizer: its state means
    another thing to each (the message lists what may change)."""
    X, y = data

    def switch(point):
        point.set_hyperparams(beta2=0.99)
        point.set_hyperparams(optimizer="sgd")

    with pytest.raises(ValueError, match=r"^set_hyperparams can change \[.*'beta1', 'beta2', 'eps'\] at run time\. "
                                         r"Got \['optimizer'\] instead\.$"):
        fit_train(X, y, hyperparams=HyperParams(optimizer="adam"), sync_every=1, callback=switch)


def test_hyperparams_list_length_must_match_instances(data, no_run):
    X, y = data
    with pytest.raises(ValueError, match=r"^The 'hyperparams' list has 2 entries but instances=3"):
        fit_train(X, y, instances=3, hyperparams=vary(lr=[0.1, 0.2]))
    with pytest.raises(ValueError, match=r"^The 'hyperparams' list has 2 entries but instances=3"):
        fit_estimator(X, y, instances=3, hyperparams=vary(lr=[0.1, 0.2]))


def test_no_instances_is_refused(data, no_run):
    X, y = data
    with pytest.raises(ValueError, match=r"^The 'hyperparams' list is empty"):
        fit_train(X, y, instances=None, hyperparams=[])
    with pytest.raises(TypeError, match=r"a list of HyperParams .* Got a list holding other objects instead"):
        fit_train(X, y, instances=None, hyperparams=[HyperParams(), {"lr": 0.1}])


def test_vary_needs_equal_lengths():
    with pytest.raises(ValueError, match=r"equal length.*got lengths \{'lr': 2, 'l2': 3\}"):
        vary(lr=[0.1, 0.2], l2=[0.0, 1e-4, 1e-3])
    with pytest.raises(TypeError, match=r"unknown hyperparameter\(s\) \['learning_rate'\]"):
        vary(learning_rate=[0.1])
    assert len(vary(lr=[0.1, 0.2], l2=[0.0, 1e-4, 1e-3], grid=True)) == 6


def test_bad_validation_pair(data, no_run):
    X, y = data
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[5, 4\]"):
        fit_train(X, y, validation=(X[:5], y[:4]))
    with pytest.raises(ValueError, match=r"^Input X_val contains NaN"):
        fit_train(X, y, validation=(with_value(np.nan)(X), y))
    with pytest.raises(ValueError, match=r"^X_val has 2 features, but X has 3"):
        fit_train(X, y, validation=(X[:, :2], y))
    with pytest.raises(ValueError, match=r"^y_val holds labels \[5\] not seen in y"):
        fit_train(X, y, validation=(X, np.where(y == 1, 5, 0)))


# --- prediction (row 22) ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return FFNNEnsembleClassifier(**FAST).fit(X, y)


def test_estimator_predict_with_wrong_feature_count(data, fitted):
    X, y = data
    for method in ("predict", "predict_proba", "predict_log_proba", "score"):
        args = (X[:, :2], y) if method == "score" else (X[:, :2],)
        with pytest.raises(ValueError, match=r"^X has 2 features, but FFNNEnsembleClassifier is expecting 3 "
                                             r"features as input\.$"):
            getattr(fitted, method)(*args)


def test_ensemble_predict_with_wrong_feature_count(data, fitted):
    X, y = data
    for model in (fitted.ensemble_, fitted.ensemble_[1]):
        for method in ("predict", "predict_proba", "score"):
            args = (np.c_[X, X], y) if method == "score" else (np.c_[X, X],)
            with pytest.raises(ValueError, match=r"^X has 6 features, but the network is expecting 3 features"):
                getattr(model, method)(*args)


def test_predict_validates_X(data, fitted):
    X, _ = data
    for model in (fitted, fitted.ensemble_, fitted.ensemble_[0]):
        with pytest.raises(ValueError, match=r"^Expected 2D array, got 1D array instead"):
            model.predict(X[0])
        with pytest.raises(ValueError, match=r"^Input X contains NaN"):
            model.predict(with_value(np.nan)(X))


def test_predict_before_fit(data):
    X, y = data
    for method in ("predict", "predict_proba", "predict_log_proba", "score"):
        args = (X, y) if method == "score" else (X,)
        with pytest.raises(NotFittedError, match=r"This FFNNEnsembleClassifier instance is not fitted yet"):
            getattr(FFNNEnsembleClassifier(), method)(*args)


# --- valid X that must work, and train exactly as the C float64 array does (row 21) ----------------

@pytest.fixture(scope="module")
def reference(data):
    X, y = data
    return fit_train(X, y)


def assert_same_run(result, reference):
    np.testing.assert_array_equal(result.ensemble.params, reference.ensemble.params)
    np.testing.assert_array_equal(result.history.losses, reference.history.losses)


LAYOUTS = {
    "F-ordered": np.asfortranarray,
    "list of lists": lambda X: X.tolist(),
    "numeric object": lambda X: X.astype(object),
    "strided": lambda X: np.repeat(X, 2, axis=1)[:, ::2],
    "read-only": lambda X: np.frombuffer(X.tobytes()).reshape(X.shape),
}


def test_valid_layouts_train_identically(data, reference):
    X, y = data
    for name, make in LAYOUTS.items():
        assert_same_run(fit_train(make(X), y), reference)


def test_plain_data_skips_sklearn_checks_with_the_same_result(data, monkeypatch):
    # a finite C float64 X and integer y is passed as it is (api._checked_already); what
    # check_X_y would return for it is the same arrays
    X, y = data
    from sklearn.utils.validation import check_X_y
    Xc, yc = check_X_y(X, y, dtype="float64", order="C", ensure_min_samples=2)
    monkeypatch.setattr(api, "check_X_y", lambda *a, **k: pytest.fail("plain data went through check_X_y"))
    Xf, yf, classes = api.check_data(X, y, "float64")
    assert Xf is X and yf is y
    np.testing.assert_array_equal(Xf, Xc)
    np.testing.assert_array_equal(yf, yc)
    np.testing.assert_array_equal(classes, [0, 1])
    others = (X.astype(np.float32), X.astype(">f8"), np.asfortranarray(X), np.where(X > 1, np.nan, X),
              np.where(X > 1, np.inf, X), X.view(np.memmap), X[:, :0])
    for other in others:
        assert not api._checked_already(other, y, "float64")
    for labels in (y.astype(float), y.astype(bool), y[:-1], y[:, None]):
        assert not api._checked_already(X, labels, "float64")
    assert not api._checked_already(X[:1], y[:1], "float64")


def test_plain_data_still_warns_of_labels_that_look_continuous():
    # more than half the samples with a class of their own: scikit-learn's warning, on either path
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 3)), np.arange(30) % 20
    with pytest.warns(UserWarning, match="greater than 50%"):
        api.check_data(X, y, "float64")


def write_memmaps(X, tmp_path):
    np.save(tmp_path / "saved.npy", X)
    yield np.load(tmp_path / "saved.npy", mmap_mode="r")
    out = np.memmap(tmp_path / "raw.dat", dtype=X.dtype, mode="w+", shape=X.shape)
    out[...] = X
    out.flush()
    del out
    yield np.memmap(tmp_path / "raw.dat", dtype=X.dtype, mode="r", shape=X.shape)


def test_read_only_memmap(data, reference, tmp_path):
    X, y = data
    for Xm in write_memmaps(X, tmp_path):
        assert isinstance(Xm, np.memmap) and not Xm.flags.writeable
        assert_same_run(fit_train(Xm, y), reference)
        clf = fit_estimator(Xm, y)
        np.testing.assert_array_equal(clf.ensemble_.params, reference.ensemble.params)
        np.testing.assert_array_equal(clf.predict(Xm), reference.ensemble.predict(X))
        np.testing.assert_array_equal(Xm, X)        # input left untouched


def test_other_dtypes_are_converted(data):
    X, y = data
    for dtype in (np.float32, np.int64, np.int32, np.uint8):
        Xd = (X * 10 + 50).astype(dtype)
        result = fit_train(Xd, y)
        assert result.ensemble.params.dtype == np.float64
        assert_same_run(result, fit_train(Xd.astype(np.float64), y))
        assert result.ensemble.predict(Xd).shape == (len(y),)


def test_float32_training(data):
    X, y = data
    result = fit_train(X, y, dtype="float32")
    assert result.ensemble.params.dtype == np.float32
    proba = result.ensemble.predict_proba(X)
    assert proba.dtype == np.float32 and proba.shape == (len(y), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    clf = fit_estimator(X.astype(np.float32), y, dtype="float32")
    np.testing.assert_array_equal(clf.ensemble_.params, result.ensemble.params)


def test_labels_of_any_type(data):
    X, y = data
    y3 = y + (X[:, 2] > 1)
    assert len(np.unique(y3)) == 3
    for labels in (np.array(["no", "yes"]), np.array([-1, 1]), np.array([1.0, 3.0]),
                   np.array(["b", "a", "c"], dtype=object), np.array([20, 10, 30])):
        codes = y3 if len(labels) == 3 else y
        result = fit_train(X, labels[codes])
        np.testing.assert_array_equal(result.ensemble.classes_, np.sort(labels))
        assert set(result.ensemble.predict(X)) <= set(labels)
        assert result.ensemble.predict_proba(X).shape == (len(y), len(labels))


# --- N = 1 (row 14) ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def single(data):
    X, y = data
    return fit_train(X, y, instances=1, epochs=40)


def test_single_instance_trains(data, single):
    X, y = data
    assert len(single.ensemble) == 1 and single.config["instances"] == 1
    losses = single.history.losses
    assert losses.shape == (1, 40) and np.all(np.isfinite(losses))
    assert losses[0, -1] < 0.5 * losses[0, 0]
    assert single.ensemble.score(X, y) >= 0.9
    np.testing.assert_array_equal(single.ensemble.predict_proba(X), single.ensemble[0].predict_proba(X))


@pytest.mark.parametrize("backend, sync", [("serial", "average"), ("threads", "none"), ("threads", "weighted"),
                                           ("prange", "best"), ("processes", "average")])
def test_single_instance_on_every_backend(data, single, backend, sync):
    """With one instance every sync strategy is the identity, and every backend agrees bit for bit."""
    X, y = data
    result = fit_train(X, y, instances=1, epochs=40, backend=backend, sync=sync, sync_every=10, workers=4)
    assert_same_run(result, single)
    np.testing.assert_array_equal(result.history.sync_epochs, [10, 20, 30, 40])


def test_single_instance_estimator(data, single):
    X, y = data
    clf = fit_estimator(X, y, instances=1, epochs=40)
    assert len(clf.ensemble_) == 1
    np.testing.assert_array_equal(clf.ensemble_.params, single.ensemble.params)
