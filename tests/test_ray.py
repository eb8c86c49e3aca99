"""The Ray backend (DESIGN.md B4, RELIABILITY.md rows 16, 17 and 30): bit-identical to serial,
actor deaths and stalls named, nothing of a run left behind -- on one local Ray instance shared by
the module (starting Ray takes seconds).  The two-node cluster is ``test_ray_cluster.py``.

Ray is an optional extra: without it these tests are skipped, and
``test_runtime.test_without_ray_the_error_names_the_extra`` checks the error a user then gets."""
from __future__ import annotations

import os
import time

import pytest

import fastffnn as ff
from fastffnn._faults import Fault, inject
from naive import make_data
from residue import actor_processes, no_actor_left

ray = pytest.importorskip("ray")

from fastffnn.backends.ray import ActorDied  # noqa: E402

pytestmark = [pytest.mark.timeout(180)]

N, EPOCHS, EVERY = 4, 60, 10
X, Y = make_data()
X_VAL, Y_VAL = make_data(40, seed=1)


@pytest.fixture(scope="module")
def local_ray():
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    train("ray", "average", epochs=1)      # Ray's own threads and workers start here, not in a test
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def no_residue():
    """Ray keeps threads and processes of its own for the session: here "nothing left behind"
    means no actor of a run (checked after every test), not conftest's process-wide count."""
    yield
    assert no_actor_left(), f"actor processes left behind: {actor_processes()}"


def train(backend, sync="none", dtype="float64", faults=(), **kw):
    options = dict(hidden=(8, 8), hyperparams=ff.vary(lr=[0.02, 0.05, 0.1, 0.2]), epochs=EPOCHS,
                   sync_every=EVERY, workers=2, timeout=60.0, seed=3, validation=(X_VAL, Y_VAL))
    options.update(kw)
    with inject(*faults):
        return ff.train(X, Y, backend=backend, sync=sync, dtype=dtype, **options)


def assert_identical(res, ref):
    assert res.ensemble.params.tobytes() == ref.ensemble.params.tobytes()
    for field in ("moments", "steps"):
        assert getattr(res.state, field).tobytes() == getattr(ref.state, field).tobytes(), field
    for field in ("losses", "global_loss", "val_accuracy", "ensemble_val_accuracy"):
        assert getattr(res.history, field).tobytes() == getattr(ref.history, field).tobytes(), field


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sync", ["none", "average", "weighted", "best"])
def test_bit_identical_to_serial(local_ray, sync, dtype):
    res = train("ray", sync, dtype)
    assert_identical(res, train("serial", sync, dtype))
    assert res.config["backend"] == "ray" and len(res.config["ray_nodes"]) == 2


def test_new_sync_options_are_bit_identical_to_serial(local_ray):
    """align, shared starts and PBT's explore (whose copied hyperparameters travel back to the
    actors with the weights)."""
    for sync, kw in (("align", dict(init="shared")), ("best", dict(sync_options={"explore": True}))):
        res, ref = train("ray", sync, **kw), train("serial", sync, **kw)
        assert_identical(res, ref)
        assert res.history.exploits == ref.history.exploits
    assert res.history.exploits and res.hyperparams == ref.hyperparams


@pytest.mark.parametrize("sync", ["align", "best"])
def test_adam_bit_identical_to_serial(local_ray, sync):
    """The actors ship both moments and the step counts each round, which "align" permutes and
    "best" copies in the driver."""
    hps = ff.vary(optimizer=["sgd", "adam", "sgd", "adam"], lr=[0.05, 0.01, 0.1, 0.02], batch_size=32)
    assert_identical(train("ray", sync, hyperparams=hps), train("serial", sync, hyperparams=hps))


def test_a_killed_actor_is_named_promptly(local_ray):
    """Row 16: an actor SIGKILLed in the middle of its kernels -> InstanceFailed naming its
    instances, in seconds."""
    t = time.monotonic()
    with pytest.raises(ff.InstanceFailed) as info:
        train("ray", "average", faults=[Fault(2, 33, "kernel", "kill")])
    assert time.monotonic() - t < 30
    err = info.value
    assert isinstance(err.__cause__, ActorDied) and "instances [2, 3]" in str(err) and err.instance in (2, 3)


def test_a_hang_is_a_stall(local_ray):
    """Row 17: the actors report their progress, so a hung instance is a SyncTimeout naming it."""
    with pytest.raises(ff.SyncTimeout) as info:
        train("ray", "average", faults=[Fault(3, 25, "kernel", "hang")], timeout=1.5)
    assert info.value.reached == {2: 30, 3: 25} and info.value.epoch == 30


def test_a_raise_in_an_actor_is_the_instances_failure(local_ray):
    with pytest.raises(ff.InstanceFailed) as info:
        train("ray", faults=[Fault(1, 14, "kernel", "raise")])
    assert (info.value.instance, info.value.epoch) == (1, 14)
