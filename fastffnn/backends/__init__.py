"""Backends: where the worker loops run.  ``BACKENDS`` is the one registry of them -- ``train``'s
constraints, the command line's choices and the docs read it.

=========  ================================================================================
serial     every instance in turn, in one worker thread
threads    a pool of threads sharing each round's instances (the nogil kernels run in parallel)
processes  a warm pool of worker processes over shared memory, coordinated from the parent
prange     one compiled ``parallel=True`` call over all instances per round
ray        Ray actors on a cluster (or a local Ray), driven round by round (``fastffnn[ray]``)
=========  ================================================================================
"""
from __future__ import annotations

from .base import Backend
from .prange import PrangeBackend
from .processes import ProcessesBackend, shutdown
from .ray import RayBackend
from .serial import SerialBackend
from .threads import ThreadsBackend

BACKENDS = {cls.name: cls for cls in (SerialBackend, ThreadsBackend, ProcessesBackend, PrangeBackend, RayBackend)}

__all__ = ["BACKENDS", "Backend", "get_backend", "shutdown"]


def get_backend(name: str, ray_address: str | None = None) -> Backend:
    """A new backend object of the registered ``name`` (``ray_address``: where the Ray backend
    runs; see ``fastffnn.backends.ray``)."""
    return RayBackend(ray_address) if name == "ray" else BACKENDS[name]()
