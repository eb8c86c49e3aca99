"""Numba options for every kernel, in one place.

``FASTMATH`` lets LLVM reassociate and contract (FMA) the inner loops so they
vectorise, but deliberately leaves out ``nnan`` and ``ninf``: the drivers check
losses and weights for NaN/Inf after each span, and those flags would let LLVM
fold such checks away.  ``afn`` (approximate exp/log) is left out too, so the
stable log-sigmoid / log-sum-exp forms stay exact.
"""
import numba

NOGIL = True
CACHE = True
FASTMATH = {"nsz", "arcp", "contract", "reassoc"}


def jit(func=None, *, nogil=NOGIL, cache=CACHE, parallel=False, inline="never"):
    """``numba.njit`` with the project's options; the one decorator kernels use.

    ``inline="always"`` is for the small helpers of the inner loops (register blocks, epilogues):
    inlined at Numba's IR level, their loops vectorise in the caller's context (measured 1.5x on
    the 4 x 2 block), which LLVM's own inlining of a separate function did not achieve."""
    decorate = numba.njit(nogil=nogil, cache=cache, fastmath=FASTMATH, parallel=parallel, inline=inline)
    return decorate if func is None else decorate(func)


# Activation codes shared by kernels and the Python registry (fastffnn.network).
RELU, LEAKY_RELU, TANH, SIGMOID = 0, 1, 2, 3
IDENTITY = -1      # the output layer: logits are left as they are
LEAKY_SLOPE = 0.01

# Layout of one instance's hyperparameter row, ``hyper`` (H,), read by the span kernels.
LR, L2, MOMENTUM, BATCH_SIZE, PENALTY = 0, 1, 2, 3, 4
N_HYPER = 5
