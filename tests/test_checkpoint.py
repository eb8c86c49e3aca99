"""Checkpoints (RELIABILITY.md rows 8, 18-20): a saved run loads back equal; 50 epochs straight equal
25 epochs, a checkpoint and a resume in a new process, bit for bit, on every backend; hostile files
are refused without unpickling anything; an interrupted write leaves the previous checkpoint.

The runs are small (3 instances, 50 epochs, mini-batches so that the batch order and its generator
matter; instance 1 trains with Adam, whose moments and step count the checkpoint carries) and shared
between tests; the resumes of every backend share one new process.  A checkpoint written before Adam
(format version 1) loads and resumes too."""
from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastffnn as ff
from fastffnn import _faults, checkpoint
from fastffnn.backends import BACKENDS

pytestmark = pytest.mark.timeout(240)

BACKEND_NAMES = ("serial", "threads", "processes", "prange")
EPOCHS, HALF = 50, 25
SNAPSHOTS = [0, 7, HALF, EPOCHS]        # 7 ends a round without a sync
X, X_VAL, Y, Y_VAL = ff.datasets.breast_cancer(test_size=0.2, seed=0)
SETTINGS = dict(hidden=(8, 8), hyperparams=ff.vary(lr=[0.02, 0.01, 0.1], optimizer=["sgd", "adam", "sgd"],
                                                   batch_size=64),
                sync="best", sync_every=5, seed=4, validation=(X_VAL, Y_VAL), workers=2)
# fastffnn 0.1.0 before Adam (SGD only).  Its arrays hold this version's numbers for those 10 epochs
# (in version 1's layout: velocity, five hyper columns, no steps), as one CPU rounds them; a change to
# the kernels' rounding rewrites them, the manifest's digests with them.
VERSION_1 = Path(__file__).parent / "data" / "checkpoint-v1.npz"
VERSION_1_SETTINGS = dict(hidden=(8,), hyperparams=ff.vary(lr=[0.02, 0.05], batch_size=[64, None]), sync="best",
                          sync_layers="last", sync_every=5, seed=4, validation=(X_VAL, Y_VAL),
                          backend="serial")    # its 10 epochs, with that version's default sync_layers


def slow_down_at_10(point):
    """A callback that changes a hyperparameter mid-run: the checkpoint must carry it."""
    if point.epoch == 10:
        point.set_hyperparams(instance=2, lr=0.03)


def bits(a) -> bytes:
    a = np.asarray(a)
    return a.dtype.str.encode() + str(a.shape).encode() + a.tobytes()


def assert_same_run(a: ff.TrainResult, b: ff.TrainResult, what: str = "") -> None:
    """Bit-identical parameters, training state, history (snapshots included) and hyperparameters."""
    assert bits(a.ensemble.params) == bits(b.ensemble.params), f"parameters differ {what}"
    for field in ("moments", "steps", "rng", "order", "hyper", "target_epochs", "data_sha256", "validation_sha256"):
        assert bits(getattr(a.state, field)) == bits(getattr(b.state, field)), f"state.{field} differs {what}"
    for field in ("losses", "sync_epochs", "global_loss", "val_accuracy", "ensemble_val_accuracy"):
        assert bits(getattr(a.history, field)) == bits(getattr(b.history, field)), f"history.{field} differs {what}"
    assert sorted(a.history.snapshots) == sorted(b.history.snapshots), what
    for epoch, params in a.history.snapshots.items():
        assert bits(params) == bits(b.history.snapshots[epoch]), f"snapshot {epoch} differs {what}"
    assert a.hyperparams == b.hyperparams, what
    assert bits(a.ensemble.classes_) == bits(b.ensemble.classes_), what


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per backend, 50 epochs straight that also checkpoint at 25 (kept as ``<path>.prev`` when the
    end is written) -- written by each backend's own barrier action; and 25 epochs saved by
    ``ff.save``."""
    folder = tmp_path_factory.mktemp("checkpoints")
    straight = {b: ff.train(X, Y, epochs=EPOCHS, backend=b, snapshots=SNAPSHOTS, callback=slow_down_at_10,
                            checkpoint=folder / f"{b}.npz", checkpoint_every=HALF, **SETTINGS)
                for b in BACKEND_NAMES}
    ff.shutdown()
    half = ff.train(X, Y, epochs=HALF, backend="serial", snapshots=SNAPSHOTS[:3], callback=slow_down_at_10,
                    **SETTINGS)
    ff.save(half, folder / "half.npz")
    return folder, straight, half


RESUME_SCRIPT = """
import sys
from pathlib import Path
import fastffnn as ff
folder = Path(sys.argv[1])
X, X_val, y, y_val = ff.datasets.breast_cancer(test_size=0.2, seed=0)
for backend in sys.argv[2:]:
    result = ff.resume(folder / f"{backend}.npz.prev", X, y, validation=(X_val, y_val), backend=backend, workers=2)
    ff.save(result, folder / f"{backend}.resumed.npz")
result = ff.resume(folder / "half.npz", X, y, epochs=%d, validation=(X_val, y_val), backend="threads",
                   snapshots=%r)
ff.save(result, folder / "half.resumed.npz")
""" % (EPOCHS, SNAPSHOTS)


@pytest.fixture(scope="module")
def resumed(runs):
    """The resumes, each from epoch 25 to 50, all in one new process."""
    folder, _, _ = runs
    subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(folder), *BACKEND_NAMES], check=True, timeout=180)
    return {name: ff.load(folder / f"{name}.resumed.npz") for name in (*BACKEND_NAMES, "half")}


def test_every_backend_is_in_the_resume_matrix():
    assert set(BACKEND_NAMES) <= set(BACKENDS)


def test_a_saved_run_loads_back_equal(runs, tmp_path):
    _, straight, _ = runs
    result = straight["threads"]
    path = ff.save(result, tmp_path / "run.npz")
    loaded = ff.load(path)
    assert_same_run(loaded, result)
    assert loaded.config == result.config
    assert loaded.timing.wall == result.timing.wall
    assert bits(loaded.timing.compute) == bits(result.timing.compute)
    assert bits(loaded.timing.barrier_wait) == bits(result.timing.barrier_wait)
    assert loaded.hyperparams[2].lr == 0.03          # the callback's change, carried
    np.testing.assert_array_equal(loaded.ensemble.predict_proba(X_VAL), result.ensemble.predict_proba(X_VAL))


def test_the_checkpoints_written_during_the_run_are_the_run_at_25_and_at_the_end(runs):
    folder, straight, _ = runs
    for backend, result in straight.items():
        assert_same_run(ff.load(folder / f"{backend}.npz"), result, backend)
        mid = ff.load(folder / f"{backend}.npz.prev")
        assert mid.config["epochs"] == HALF and mid.history.losses.shape == (3, HALF)
        assert list(mid.history.sync_epochs) == list(range(5, HALF + 1, 5))
        assert sorted(mid.history.snapshots) == [0, 7, HALF]


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_fifty_epochs_straight_equal_25_and_a_resume_in_a_new_process(runs, resumed, backend):
    _, straight, _ = runs
    assert_same_run(resumed[backend], straight[backend], f"({backend}, resumed from its own checkpoint at 25)")
    assert_same_run(straight[backend], straight["serial"], f"({backend} against serial)")
    assert resumed[backend].config == straight[backend].config


def test_a_saved_half_run_resumed_on_another_backend_equals_the_straight_run(runs, resumed):
    _, straight, half = runs
    assert half.config["epochs"] == HALF and half.state.target_epochs == HALF
    assert_same_run(resumed["half"], straight["serial"], "(25 on serial, save, 25 on threads)")
    assert resumed["half"].config["epochs"] == EPOCHS and resumed["half"].config["backend"] == "threads"


def test_the_state_holds_the_adam_moments_and_the_step_counts(runs):
    """Every instance has taken 8 steps an epoch (455 samples in batches of 64); the Adam
    instance's second moment is positive, SGD's stays zero ("best" copies between the two SGD
    instances only)."""
    _, straight, _ = runs
    state = straight["serial"].state
    assert state.moments.shape == (3, 2, straight["serial"].ensemble.params.shape[1])
    assert state.steps.tolist() == [EPOCHS * 8] * 3
    assert (state.moments[1, 1] > 0).all() and (state.moments[[0, 2], 1] == 0).all()


def test_a_version_1_checkpoint_loads_and_resumes_as_the_straight_run(tmp_path):
    """A checkpoint of fastffnn before Adam (10 epochs of SGD) reads as this version's: its velocity
    is the first moment, the steps follow from its epochs and batch sizes, the new hyperparameter
    columns are SGD's defaults.  Resumed to 20 epochs, it keeps its own 10 epochs bit for bit and
    goes on as the straight run of this version, to the rounding of the CPU that wrote it (CPUs
    whose loops vectorise differently round the last bits differently); resumed again from its
    version-2 copy, it is the same run bit for bit; saved again, it is version 2."""
    old = ff.load(VERSION_1)
    assert old.config["epochs"] == 10 and [hp.optimizer for hp in old.hyperparams] == ["sgd", "sgd"]
    assert old.state.steps.tolist() == [10 * 8, 10] and (old.state.moments[:, 1] == 0).all()
    np.testing.assert_array_equal(old.state.hyper, np.array([hp.row(len(X)) for hp in old.hyperparams]))
    straight = ff.train(X, Y, epochs=20, **VERSION_1_SETTINGS)
    resumed = ff.resume(VERSION_1, X, Y, epochs=20, validation=(X_VAL, Y_VAL))
    np.testing.assert_array_equal(resumed.history.losses[:, :10], old.history.losses)
    for field in ("steps", "order", "hyper", "target_epochs", "data_sha256", "validation_sha256"):
        assert bits(getattr(resumed.state, field)) == bits(getattr(straight.state, field)), field
    np.testing.assert_allclose(resumed.history.losses, straight.history.losses, rtol=1e-12)
    np.testing.assert_allclose(resumed.ensemble.params, straight.ensemble.params, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(resumed.state.moments, straight.state.moments, rtol=1e-9, atol=1e-12)
    assert bits(resumed.history.sync_epochs) == bits(straight.history.sync_epochs)
    copy = ff.save(old, tmp_path / "version-2.npz")
    assert_same_run(ff.resume(copy, X, Y, epochs=20, validation=(X_VAL, Y_VAL)), resumed, "(from its version-2 copy)")
    with np.load(ff.save(resumed, tmp_path / "run.npz")) as saved:
        assert json.loads(saved["manifest"].tobytes())["version"] == checkpoint.VERSION == 2


def test_a_checkpoint_at_the_last_sync_survives_a_failed_run_and_resumes_it(tmp_path):
    path = tmp_path / "run.npz"
    options = dict(epochs=30, hidden=(8,), instances=2, sync="average", sync_every=5, backend="threads")
    with _faults.inject(_faults.Fault(instance=1, epoch=17, where="kernel", what="raise")):
        with pytest.raises(ff.InstanceFailed):
            ff.train(X, Y, checkpoint=path, **options)
    saved = ff.load(path)
    assert saved.config["epochs"] == 15 and list(saved.history.sync_epochs) == [5, 10, 15]
    assert_same_run(ff.resume(path, X, Y), ff.train(X, Y, **options))


def test_a_resume_on_other_data_or_without_the_validation_data_is_refused(runs):
    folder, _, _ = runs
    path = folder / "half.npz"
    with pytest.raises(ff.CheckpointError, match=r"half\.npz: was trained on other data"):
        ff.resume(path, X[::-1], Y[::-1], validation=(X_VAL, Y_VAL))
    with pytest.raises(ff.CheckpointError, match=r"half\.npz: .*other data"):
        ff.resume(path, X[:, :20], Y, validation=(X_VAL[:, :20], Y_VAL))
    with pytest.raises(ff.CheckpointError, match=r"was trained with validation data; pass the run's"):
        ff.resume(path, X, Y)
    with pytest.raises(ff.CheckpointError, match="was trained with other validation data"):
        ff.resume(path, X, Y, validation=(X_VAL[::-1], Y_VAL[::-1]))
    with pytest.raises(ValueError, match=r"has trained 25 epochs\. Got 20 instead"):
        ff.resume(path, X, Y, epochs=20, validation=(X_VAL, Y_VAL))
    with pytest.raises(ValueError, match="has trained 25 epochs"):
        ff.resume(path, X, Y, validation=(X_VAL, Y_VAL))      # it was started for 25: nothing left


@pytest.mark.parametrize("options, message", [
    (dict(checkpoint_every=5), "needs checkpoint=PATH"),
    (dict(checkpoint="no/such/folder/run.npz"), "not an existing folder"),
    (dict(checkpoint=3), "The 'checkpoint' parameter of train must be"),
    (dict(checkpoint="run.npz", checkpoint_every=0), r"The 'checkpoint_every' parameter of train must be an int"),
])
def test_checkpoint_arguments_are_validated_before_the_run(options, message):
    with pytest.raises(ValueError, match=message):
        ff.train(X, Y, epochs=5, **options)


# --- hostile files ----------------------------------------------------------------------------

class Planted:
    """Unpickling this creates the file ``path``: a trace that something was unpickled."""

    def __init__(self, path):
        self.path = Path(path)

    def __reduce__(self):
        return Path.touch, (self.path,)


def members(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def write_members(path, content: dict) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in content.items():
            zf.writestr(name, data)


def npy(array, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def with_manifest(path, edit, rehash=False) -> None:
    """Rewrite the checkpoint at ``path`` with ``edit(manifest)`` applied (and its config digest
    recomputed when ``rehash``, as a careful forger would)."""
    content = members(path)
    manifest = json.loads(np.lib.format.read_array(io.BytesIO(content["manifest.npy"])).tobytes())
    edit(manifest)
    if rehash:
        manifest["config_sha256"] = checkpoint._config_digest(manifest["config"])
    content["manifest.npy"] = npy(np.frombuffer(json.dumps(manifest).encode(), np.uint8))
    write_members(path, content)


def plant_pickle(path, marker):
    path.write_bytes(pickle.dumps(Planted(marker)))


def plant_object_array(path, marker):
    content = members(path)
    content["params.npy"] = npy(np.array([Planted(marker)], dtype=object), allow_pickle=True)
    write_members(path, content)


def truncate(path, marker):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def flip_a_byte(path, marker):
    data = bytearray(path.read_bytes())
    start = data.index(b"params.npy")       # the local header; the array's bytes follow
    data[start + 400] ^= 0x01
    path.write_bytes(bytes(data))


def alter_an_array(path, marker):
    """New parameters in a well-formed zip (its CRCs are right): only the manifest's sha256 tells."""
    content = members(path)
    params = np.lib.format.read_array(io.BytesIO(content["params.npy"]))
    content["params.npy"] = npy(params + 1.0)
    write_members(path, content)


def foreign_npz(path, marker):
    np.savez(path, weights=np.zeros(3))


HOSTILE = {
    "a pickle": (plant_pickle, "holds a pickle, not a fastffnn checkpoint"),
    "a pickled object array": (plant_object_array, "holds pickled Python objects"),
    "truncated": (truncate, "truncated or damaged"),
    "a flipped byte": (flip_a_byte, "damaged"),
    "an altered array": (alter_an_array, "array 'params' does not match its sha256"),
    "a foreign npz": (foreign_npz, "without a fastffnn manifest"),
    "a newer version": (lambda p, m: with_manifest(p, lambda d: d.update(version=3)),
                        "format version 3.*reads versions 1, 2; upgrade fastffnn"),
    "an altered config": (lambda p, m: with_manifest(p, lambda d: d["config"].update(hidden=[16])),
                          "does not match its config_sha256"),
    "a config that does not fit": (lambda p, m: with_manifest(p, lambda d: d["config"].update(hidden=[16]),
                                                              rehash=True), "does not fit array 'params'"),
    "empty": (lambda p, m: p.write_bytes(b""), "is empty"),
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_files_are_refused_naming_the_file_and_nothing_is_unpickled(runs, tmp_path, kind):
    folder, _, _ = runs
    path, marker = tmp_path / "run.npz", tmp_path / "unpickled"
    path.write_bytes((folder / "half.npz").read_bytes())
    corrupt, message = HOSTILE[kind]
    corrupt(path, marker)
    with pytest.raises(ff.CheckpointError, match=message) as error:
        ff.load(path)
    assert error.value.path == str(path) and str(path) in str(error.value)
    with pytest.raises(ff.CheckpointError):
        ff.resume(path, X, Y, validation=(X_VAL, Y_VAL))
    assert not marker.exists(), "something was unpickled"


def test_a_missing_checkpoint_points_at_the_previous_one(tmp_path, runs):
    folder, _, _ = runs
    (tmp_path / "run.npz.prev").write_bytes((folder / "half.npz").read_bytes())
    with pytest.raises(ff.CheckpointError, match=r"no such checkpoint file; .*run\.npz\.prev exists"):
        ff.load(tmp_path / "run.npz")


# --- interrupted writes -----------------------------------------------------------------------

def fail_on_call(n: int, original):
    """A stand-in for ``original`` that raises on its n-th call (1-based) and passes the others through."""
    calls = []

    def stand_in(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise OSError(28, "No space left on device")
        return original(*args, **kwargs)
    return stand_in


@pytest.mark.parametrize("target, n", [
    ("write_array", 3),     # midway through the arrays
    ("replace", 1),         # keeping the old file as .prev
    ("replace", 2),         # renaming the new file into place
])
def test_an_interrupted_write_keeps_the_previous_checkpoint_and_leaves_no_temp_file(runs, tmp_path, monkeypatch,
                                                                                    target, n):
    folder, straight, half = runs
    path = tmp_path / "run.npz"
    ff.save(half, path)
    owner = np.lib.format if target == "write_array" else os
    monkeypatch.setattr(owner, target, fail_on_call(n, getattr(owner, target)))
    with pytest.raises(OSError, match=r"Could not write the checkpoint .*run\.npz: No space left on device"):
        ff.save(straight["serial"], path)
    monkeypatch.undo()
    assert_same_run(ff.load(path), half)
    assert {p.name for p in tmp_path.iterdir()} <= {"run.npz", "run.npz.prev"}, "a temporary file was left"


def test_a_write_keeps_the_checkpoint_it_replaces_as_prev(runs, tmp_path):
    _, straight, half = runs
    path = tmp_path / "run.npz"
    ff.save(half, path)
    ff.save(straight["serial"], path)
    assert_same_run(ff.load(path), straight["serial"])
    assert_same_run(ff.load(checkpoint.previous(path)), half)
    assert sorted(os.listdir(tmp_path)) == ["run.npz", "run.npz.prev"]


def test_loading_reads_no_pickle_even_from_numpy(monkeypatch, runs):
    """Every np.load of a checkpoint passes allow_pickle=False."""
    folder, _, _ = runs
    seen = []
    original = np.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("allow_pickle"))
        return original(*args, **kwargs)
    monkeypatch.setattr(np, "load", spy)
    ff.load(folder / "half.npz")
    assert seen == [False]
