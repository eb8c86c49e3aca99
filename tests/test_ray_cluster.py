"""The Ray backend on a two-node cluster on this machine (RELIABILITY.md row 30), apart from
``test_ray.py``: the local Ray that module shares must be gone before this cluster starts."""
from __future__ import annotations

import os
import time

import pytest

import fastffnn as ff

from residue import no_actor_left, ray_daemons, actor_processes

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from fastffnn.backends.ray import ActorDied  # noqa: E402
from test_ray import assert_identical, train  # noqa: E402

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def no_residue():
    """As in test_ray: no actor of a run is left after the test."""
    yield
    assert no_actor_left(), f"actor processes left behind: {actor_processes()}"


def test_two_nodes_bit_identical_and_a_removed_node_is_reported():
    """Row 30, on a two-node cluster on this machine (127.0.0.1 only): a run places one actor on
    each node and equals serial; removing the second node mid-run is an InstanceFailed naming its
    instances; both nodes stop cleanly afterwards."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker_node = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        res = train("ray", "average", ray_address=cluster.address)
        assert not ray.is_initialized(), "a run that connected to the cluster disconnects after it"
        assert_identical(res, train("serial", "average"))
        assert len(set(res.config["ray_nodes"])) == 2, res.config["ray_nodes"]

        on_worker = {}

        def remove_node(point):
            if point.round == 0:
                nodes = point._ctx.plan      # the plan says which instances each actor holds
                on_worker["groups"] = nodes.groups
                cluster.remove_node(worker_node)

        with pytest.raises(ff.InstanceFailed) as info:
            train("ray", "average", ray_address=cluster.address, callback=remove_node)
        err = info.value
        assert isinstance(err.__cause__, ActorDied)
        lost = [g for g in on_worker["groups"] if f"instances {list(g)}" in str(err)]
        assert len(lost) == 1 and err.instance in lost[0]
    finally:
        cluster.shutdown()
    assert not ray.is_initialized()
    deadline = time.monotonic() + 30
    while ray_daemons() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ray_daemons(), "a node's raylet or GCS outlived the cluster"
