"""The Ray backend: the same run from a laptop to a cluster (``pip install fastffnn[ray]``).

Actors each hold a fixed group of instances and run the same span kernels through the driver's
``run_instances``; the calling process drives every round: it calls each actor's ``run_round``
with the rows the last sync left, waits with ``ray.wait(timeout=...)`` (polling the actors'
progress counters for the stall watchdog and the run's cancel flag), writes the rows that come
back into its own arrays, and runs the same sync action and reduction in instance order -- so the
results are bit-identical to the serial backend for every strategy.  No collective library: a
driver-side reduction costs a few ms per round and cannot hang on a dead peer.

X and T go into the object store once (``ray.put``); an actor on a node maps them read-only,
without a copy, and the kernels only read them.  An actor that dies -- killed, or its node
removed -- is an ``InstanceFailed`` naming its instances; at the end of every run, failed or not,
the run's actors are killed, and a local Ray that the run started is shut down.

Where Ray runs: ``ray_address`` (``train(ray_address=...)``, ``--ray-address``), else the
``RAY_ADDRESS`` environment variable, else the Ray this process is already connected to, else a
local one that the run starts and stops.
"""
from __future__ import annotations

import os
from time import monotonic

import numpy as np

from ..driver import Context, Watchdog, run_instances
from ..errors import InstanceFailed
from .base import Backend

POLL = 0.1              # seconds between looks at the cancel flag and the actors' progress
STARTUP_TIMEOUT = 120.0     # seconds the actors may take to start and load their kernels
START = ("params", "moments", "steps", "rng", "order", "hyper", "epochs_done")     # an actor's first rows
STATE = ("params", "moments", "steps", "hyper")     # what a sync may change, sent back each round
RESULT = ("params", "moments", "steps", "rng", "order", "epochs_done", "arrived", "compute")


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError("backend='ray' needs Ray: pip install 'fastffnn[ray]' (or pip install ray).") from exc
    return ray


class ActorDied(RuntimeError):
    """The cause of an InstanceFailed whose Ray actor died (killed, or its node removed)."""


class InstanceGroup:
    """What one actor holds: a context for the whole run (only its group's rows are used) over
    its own arrays, with X and T from the object store."""

    def __init__(self, plan, worker: int, X: np.ndarray, T: np.ndarray):
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
        arrays = {name: np.zeros(shape, dtype) for name, (shape, dtype) in plan.array_specs().items()
                  if name not in ("X", "T")}
        self.ctx = Context(plan, {**arrays, "X": X, "T": T})
        self.worker, self.group = worker, list(plan.groups[worker])

    def start(self, rows: dict) -> str:
        """Take the group's starting rows, load the kernels; returns this actor's node id."""
        import ray
        for name, values in rows.items():
            getattr(self.ctx, name)[self.group] = values
        self.scratch = self.ctx.scratch()
        self.ctx.run_span(self.group[0], 0, 0, self.scratch)
        return ray.get_runtime_context().get_node_id()

    def run_round(self, r: int, rows: dict) -> dict | None:
        """Round r of the group from the rows the last sync left; returns its rows and its
        losses of the round, or None when the run was cancelled meanwhile."""
        ctx, group = self.ctx, self.group
        for name, values in rows.items():
            getattr(ctx, name)[group] = values
        finished = run_instances(ctx, self.worker, group, r, self.scratch)
        if not finished:
            return None
        e0, e1 = ctx.plan.rounds[r]
        out = {name: getattr(ctx, name)[group] for name in RESULT}
        out["losses"] = ctx.losses[group, e0:e1]
        return out

    def progress(self) -> np.ndarray:
        """The group's completed epochs (read while ``run_round`` runs: the actor has two threads)."""
        return self.ctx.epochs_done[self.group].copy()

    def cancel(self) -> None:
        self.ctx.cancel.set()


class RayBackend(Backend):
    """``workers`` Ray actors, spread over the cluster, driven round by round from this process."""

    name = "ray"
    parallel = True

    def __init__(self, address: str | None = None):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.started = False        # whether this run started the Ray it uses (and so stops it)

    def connect(self) -> None:
        """Connect to Ray (see the module docstring), once."""
        ray = _ray()
        if not ray.is_initialized():
            kwargs = dict(address=self.address) if self.address else dict(include_dashboard=False)
            ray.init(**kwargs, configure_logging=False)
            self.started = True

    @property
    def info(self) -> dict:
        """The node id of each actor, in worker order."""
        return {"ray_nodes": list(getattr(self, "nodes", []))}

    def default_workers(self, instances: int) -> int:
        """The cluster's CPUs, at most ``instances``."""
        self.connect()
        return max(1, min(instances, int(_ray().cluster_resources().get("CPU", 1))))

    def execute(self, ctx: Context, action) -> None:
        ray = _ray()
        self.connect()
        plan = ctx.plan
        actor_class = ray.remote(num_cpus=1, max_concurrency=2)(InstanceGroup)
        X, T = ray.put(ctx.X), ray.put(ctx.T)
        actors = [actor_class.options(scheduling_strategy="SPREAD").remote(plan, w, X, T)
                  for w in range(len(plan.groups))]
        self.nodes = []
        try:
            starts = [a.start.remote(self._rows(ctx, g, START)) for a, g in zip(actors, plan.groups)]
            self.nodes = self._gather(ctx, actors, starts, deadline=monotonic() + STARTUP_TIMEOUT)
            with Watchdog(ctx):
                for r in range(len(plan.rounds)):
                    refs = [a.run_round.remote(r, self._rows(ctx, g, STATE)) for a, g in zip(actors, plan.groups)]
                    if self._gather(ctx, actors, refs, r) is None:
                        break
                    action()
        except BaseException as exc:
            ctx.failure.record(exc)
            if not isinstance(exc, Exception):
                raise           # Ctrl-C: cancelled below, then re-raised
        finally:
            ctx.cancel.set()
            for actor in actors:
                ray.kill(actor)
            if self.started:
                ray.shutdown()
        ctx.raise_failure()

    @staticmethod
    def _rows(ctx: Context, group, names) -> dict:
        return {name: getattr(ctx, name)[list(group)] for name in names}

    @staticmethod
    def _write(ctx: Context, r: int, group, rows: dict) -> None:
        """An actor's rows after round r, into the run's arrays (it has arrived at the sync)."""
        e0, e1 = ctx.plan.rounds[r]
        group = list(group)
        for name in RESULT:
            getattr(ctx, name)[group] = rows[name]
        ctx.losses[group, e0:e1] = rows["losses"]

    def _gather(self, ctx: Context, actors: list, refs: list, r: int | None = None,
                deadline: float | None = None) -> list | None:
        """Every actor's result of ``refs``, in order -- with ``r``, round r's rows, each written
        into the run's arrays as it comes; None once the run is cancelled (the watchdog, Ctrl-C,
        a failure).  While waiting, the actors' progress counters are copied into the run's
        ``epochs_done`` for the watchdog.  A dead actor raises ``InstanceFailed`` naming its
        instances; an exception in an actor is re-raised here."""
        ray = _ray()
        pending = dict(zip(refs, range(len(refs))))
        results = [None] * len(refs)
        while pending:
            if ctx.cancel.is_set():
                for actor in actors:
                    actor.cancel.remote()
                return None
            if deadline is not None and monotonic() > deadline:
                raise TimeoutError(f"the Ray actors did not start within {STARTUP_TIMEOUT} s; the cluster "
                                   f"may lack free CPUs for {len(actors)} actors (workers=).")
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL)
            for ref in ready:
                w = pending.pop(ref)
                results[w] = self._result(ctx, actors[w], w, ref)
                if results[w] is None:
                    return None         # that actor saw the cancel flag
                if r is not None:
                    self._write(ctx, r, ctx.plan.groups[w], results[w])
            if pending:
                self._poll_progress(ctx, actors, [pending[ref] for ref in pending])
        return results

    def _result(self, ctx: Context, actor, w: int, ref):
        ray = _ray()
        group = list(ctx.plan.groups[w])
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            behind = [k for k in group if ctx.epochs_done[k] < ctx.plan.epochs] or group
            node = f" on node {self.nodes[w]}" if w < len(self.nodes) else ""
            died = ActorDied(f"Ray actor {actor._actor_id.hex()}{node} (instances {group}) died: {exc}")
            died.__cause__ = exc        # Ray's own account, under ours
            raise InstanceFailed(behind[0], int(ctx.epochs_done[behind[0]]), died)
        except ray.exceptions.RayTaskError as exc:
            raise exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc

    @staticmethod
    def _poll_progress(ctx: Context, actors: list, workers: list) -> None:
        ray = _ray()
        refs = {actors[w].progress.remote(): w for w in workers}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=POLL)
        for ref in ready:
            try:
                ctx.epochs_done[list(ctx.plan.groups[refs[ref]])] = ray.get(ref)
            except ray.exceptions.RayError:
                pass            # a dead actor is reported by its round's result
