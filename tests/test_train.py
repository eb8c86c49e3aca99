"""End-to-end behaviour of fastffnn.train and the main job: accuracy, result shapes, vary()."""
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

import fastffnn as ff


def test_default_settings_match_scikit_learn_on_breast_cancer():
    """Mean test accuracy over 5 stratified splits is at least MLPClassifier((32, 32))'s."""
    ours, theirs = [], []
    for seed in range(5):
        X_train, X_test, y_train, y_test = ff.datasets.breast_cancer(test_size=0.2, seed=seed)
        ours.append(ff.train(X_train, y_train, seed=seed).ensemble.score(X_test, y_test))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp = MLPClassifier((32, 32), max_iter=2000, random_state=seed).fit(X_train, y_train)
        theirs.append(mlp.score(X_test, y_test))
    assert np.mean(ours) >= np.mean(theirs), (ours, theirs)
    assert np.mean(ours) > 0.95


def test_result_shapes_and_contents():
    X_train, X_test, y_train, y_test = ff.datasets.breast_cancer(test_size=0.2, seed=1)
    res = ff.train(X_train, y_train, instances=3, epochs=50, sync="average", sync_every=20,
                   validation=(X_test, y_test), backend="serial")
    assert res.history.losses.shape == (3, 50)
    assert list(res.history.sync_epochs) == [20, 40, 50]
    assert res.history.global_loss.shape == (3,)
    assert res.history.val_accuracy.shape == (3, 3)
    assert res.history.ensemble_val_accuracy.shape == (3,)
    assert res.timing.compute.shape == (3,) and res.timing.barrier_wait.shape == (3,)
    assert res.timing.wall > 0 and (res.timing.compute > 0).all()
    assert len(res.ensemble) == 3
    inst = res.ensemble[0]
    assert [w.shape for w in inst.weights] == [(30, 32), (32, 32), (32, 1)]
    assert [b.shape for b in inst.biases] == [(32,), (32,), (1,)]
    assert np.shares_memory(inst.weights[0], res.ensemble.params)
    proba = res.ensemble.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba, np.mean([i.predict_proba(X_test) for i in res.ensemble], axis=0))
    assert set(np.unique(res.ensemble.predict(X_test))) <= {0, 1}
    # the loss falls
    assert (res.history.losses[:, -1] < res.history.losses[:, 0]).all()


def test_multiclass_softmax_output_and_string_labels():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 4)) * 4
    X = np.vstack([c + rng.normal(size=(40, 4)) for c in centers])
    y = np.repeat(np.array(["a", "b", "c"]), 40)
    res = ff.train(X, y, instances=2, epochs=200, hidden=(8,), backend="serial")
    assert res.ensemble.topology.sizes == (4, 8, 3)
    assert res.ensemble.predict_proba(X).shape == (120, 3)
    assert res.ensemble.score(X, y) > 0.9
    assert set(res.ensemble.predict(X)) <= {"a", "b", "c"}


def test_vary_zips_lists_broadcasts_scalars_and_builds_grids():
    hps = ff.vary(lr=[0.01, 0.1], l2=1e-4)
    assert [h.lr for h in hps] == [0.01, 0.1] and all(h.l2 == 1e-4 for h in hps)
    grid = ff.vary(lr=[0.01, 0.1], momentum=[0.0, 0.5, 0.9], grid=True)
    assert len(grid) == 6 and {(h.lr, h.momentum) for h in grid} == {(a, b) for a in (0.01, 0.1) for b in (0.0, 0.5, 0.9)}
    X_train, _, y_train, _ = ff.datasets.breast_cancer(seed=0)
    res = ff.train(X_train, y_train, hyperparams=hps, epochs=5, backend="serial")
    assert len(res.ensemble) == 2 and [h.lr for h in res.hyperparams] == [0.01, 0.1]


def test_penalty_sharpens_the_output():
    """Case 3: sigmoid(penalty * z) -- the same logits give more confident probabilities."""
    X_train, X_test, y_train, _ = ff.datasets.breast_cancer(seed=0)
    res = ff.train(X_train, y_train, instances=1, epochs=30, backend="serial")
    inst = res.ensemble[0]
    p1 = inst.predict_proba(X_test)[:, 1]
    sharp = ff.network.Instance(inst.topology, inst.params, ff.HyperParams(penalty=3.0), inst.classes_)
    p3 = sharp.predict_proba(X_test)[:, 1]
    assert (np.abs(p3 - 0.5) >= np.abs(p1 - 0.5) - 1e-12).all()
    assert (np.abs(p3 - 0.5) > np.abs(p1 - 0.5)).any()


def test_snapshots_split_rounds_without_syncing_and_change_no_result():
    """Snapshot epochs between sync points end rounds there: the weights, losses and sync history
    are those of the run without snapshots, and the callback still sees only the sync points."""
    X_train, X_test, y_train, y_test = ff.datasets.breast_cancer(seed=0)
    seen = {}

    def run(**kw):
        seen[len(seen)] = epochs = []
        return ff.train(X_train, y_train, instances=2, epochs=20, sync="average", sync_every=5, backend="threads",
                        hyperparams=ff.HyperParams(batch_size=64), validation=(X_test, y_test),
                        callback=lambda point: epochs.append(point.epoch), **kw)

    plain, snapped = run(), run(snapshots=[0, 3, 5, 12, 20])
    assert np.array_equal(plain.ensemble.params, snapped.ensemble.params)
    for field in ("losses", "sync_epochs", "global_loss", "val_accuracy", "ensemble_val_accuracy"):
        assert np.array_equal(getattr(plain.history, field), getattr(snapped.history, field)), field
    assert list(snapped.history.sync_epochs) == [5, 10, 15, 20] and seen[1] == [5, 10, 15, 20] == seen[0]
    assert plain.history.snapshots == {} and sorted(snapped.history.snapshots) == [0, 3, 5, 12, 20]
    assert np.array_equal(snapped.history.snapshots[20], snapped.ensemble.params)
    # epoch 3 is the end of a 3-epoch run (no sync before it), epoch 0 its start
    short = ff.train(X_train, y_train, instances=2, epochs=3, sync_every=5, backend="serial",
                     hyperparams=ff.HyperParams(batch_size=64), snapshots=[0])
    assert np.array_equal(snapped.history.snapshots[3], short.ensemble.params)
    assert np.array_equal(snapped.history.snapshots[0], short.history.snapshots[0])
    assert not np.array_equal(snapped.history.snapshots[0], snapped.history.snapshots[3])


@pytest.mark.parametrize("snapshots", [[-1], [21], [1.5], [True], ["5"]])
def test_snapshot_epochs_outside_the_run_are_refused_with_the_value(snapshots):
    X_train, _, y_train, _ = ff.datasets.breast_cancer(seed=0)
    with pytest.raises(ValueError, match=r"The 'snapshots' parameter of train must be a list of epochs, ints in "
                                         r"the range \[0, 20\].*Got \[" ):
        ff.train(X_train, y_train, epochs=20, snapshots=snapshots)


def test_main_job_prints_instances_and_ensemble(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastffnn", "train", "--instances", "3", "--epochs", "100",
                          "--no-plots"], capture_output=True, text=True, timeout=300, check=True, cwd=tmp_path).stdout
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"], ["2"])]
    assert len(rows) == 3 and "sync=none" in out
    ensemble = next(line for line in out.splitlines() if line.startswith("ensemble")).split()
    assert float(ensemble[-1]) > 0.9          # test accuracy
    assert not (tmp_path / "Plots").exists()
