"""Exceptions a run raises, each naming where it failed (all picklable, so they cross processes), and
the checkpoint files' error."""


class FastFFNNError(RuntimeError):
    """Base class of fastffnn's run-time failures."""


class InstanceFailed(FastFFNNError):
    """An instance raised, or the worker running it died.  ``cause`` is the original exception
    (also ``__cause__``) or, when it could not cross a process boundary, its traceback text."""

    def __init__(self, instance: int, epoch: int, cause: object):
        super().__init__(instance, epoch, cause)
        self.instance, self.epoch, self.cause = instance, epoch, cause
        if isinstance(cause, BaseException):
            self.__cause__ = cause      # also when rebuilt from pickle in the parent process

    def __str__(self) -> str:
        return f"instance {self.instance} failed in epoch {self.epoch}: {self.cause}"


class SyncTimeout(FastFFNNError):
    """The run stopped progressing: no epoch completed anywhere for ``timeout`` seconds (the stall
    watchdog), while the sync at ``epoch`` waited.  ``missing`` lists the instances that had not
    reached that sync, and ``reached`` the epoch each had completed; ``startup``: worker processes
    did not start in time."""

    def __init__(self, epoch: int, reached: dict, timeout: float | None = None, startup: bool = False):
        super().__init__(epoch, reached, timeout, startup)
        self.epoch, self.reached, self.timeout, self.startup = epoch, dict(reached), timeout, startup
        self.missing = sorted(self.reached)

    def __str__(self) -> str:
        if self.startup:
            return (f"worker processes did not start within {self.timeout} s; instances of the workers "
                    f"that never reported ready: {self.missing}. The machine may be overloaded.")
        if not self.missing:
            return (f"every instance reached the sync at epoch {self.epoch}, but the sync there made no "
                    f"progress for {self.timeout} s (a hung sync action or callback).")
        behind = ", ".join(f"{k} (at epoch {e})" for k, e in sorted(self.reached.items()))
        return (f"no epoch completed anywhere for {self.timeout} s while the sync at epoch {self.epoch} "
                f"waited for instances {behind}: they look hung. Raise `timeout` if a single epoch "
                f"can take that long.")


class NonFiniteError(FastFFNNError):
    """Instance ``instance`` produced a NaN or Inf loss or weight, first seen in ``epoch``; it was
    caught before the sync, so no other instance received it."""

    def __init__(self, instance: int, epoch: int):
        super().__init__(instance, epoch)
        self.instance, self.epoch = instance, epoch

    def __str__(self) -> str:
        return (f"instance {self.instance} has a non-finite loss or weight in epoch {self.epoch}; "
                f"lower its learning rate or check the data.")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, truncated, damaged, foreign, of another
    format version, holding pickled objects, or saved from a run on other data.  ``path`` names
    the file; the message says what is wrong with it."""

    def __init__(self, path, problem: str):
        super().__init__(path, problem)
        self.path, self.problem = str(path), problem

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"
