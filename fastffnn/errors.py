"""Exceptions a run raises; each names where it failed.  All are picklable so they cross processes."""


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
    """The sync round ending at ``epoch`` did not complete within the timeout; ``missing`` lists
    every instance that had not reached the barrier."""

    def __init__(self, epoch: int, missing: list, timeout: float | None = None, startup: bool = False):
        super().__init__(epoch, missing, timeout, startup)
        self.epoch, self.missing, self.timeout, self.startup = epoch, list(missing), timeout, startup

    def __str__(self) -> str:
        if self.startup:
            return (f"worker processes did not start within {self.timeout} s; instances of the workers "
                    f"that never reported ready: {self.missing}. The machine may be overloaded.")
        return (f"sync at epoch {self.epoch} timed out after {self.timeout} s; instances not at the "
                f"barrier: {self.missing}. Raise `timeout` if spans of `sync_every` epochs are slow.")


class NonFiniteError(FastFFNNError):
    """Instance ``instance`` produced a NaN or Inf loss or weight, first seen in ``epoch``; it was
    caught before the sync, so no other instance received it."""

    def __init__(self, instance: int, epoch: int):
        super().__init__(instance, epoch)
        self.instance, self.epoch = instance, epoch

    def __str__(self) -> str:
        return (f"instance {self.instance} has a non-finite loss or weight in epoch {self.epoch}; "
                f"lower its learning rate or check the data.")
