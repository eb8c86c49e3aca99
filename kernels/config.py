"""Numba options for every kernel, in one place.

``FASTMATH`` lets LLVM reassociate and contract (FMA) the inner loops so they
vectorise, but deliberately leaves out ``nnan`` and ``ninf``: the drivers check
losses and weights for NaN/Inf after each span, and those flags would let LLVM
fold such checks away.  ``afn`` (approximate exp/log) is left out too, so the
stable log-sigmoid / log-sum-exp forms stay exact.  ``CONTRACT`` (fused multiply-add alone) is
for code whose rounding is part of its algorithm, as ``elementary``'s range reductions.
"""
import os
import warnings

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types
from numba._dispatcher import compute_fingerprint
from numba.core import sigutils
from numba.core.caching import FunctionCache, IndexDataCacheFile
from numba.core.ccallback import CFunc
from numba.core.registry import CPUDispatcher

NOGIL = True
CACHE = True


def _vector_bytes() -> int:
    """Bytes of the vector the gemm's tiles are written in (``gemm.VECTOR_BYTES``): 64, a ZMM
    register, where the CPU Numba compiles for has AVX-512 (twice the multiply-adds per cycle of
    AVX2 on a CPU whose FMA units are 512 bits wide), else 32, an AVX2 register, which LLVM splits
    where the CPU has narrower ones.  ``FASTFFNN_VECTOR_BYTES`` (32 or 64) overrides it: 32 on
    a CPU whose 512-bit instructions lower its clock.  Every element of a product is reduced in the
    same order whatever the width, so the results do not depend on it."""
    setting = os.environ.get("FASTFFNN_VECTOR_BYTES", "").strip()
    if setting:
        if setting not in ("32", "64"):
            raise ValueError(f"FASTFFNN_VECTOR_BYTES={setting!r}: must be 32 or 64 (bytes of a vector "
                             f"register), or unset to choose by the CPU")
        return int(setting)
    # the features Numba's JIT compiles with: NUMBA_CPU_FEATURES where set (Numba's config makes it
    # empty for NUMBA_CPU_NAME=generic), else the host's, whatever NUMBA_CPU_NAME names
    features = numba.config.CPU_FEATURES
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    return 64 if "+avx512f" in features.split(",") else 32


VECTOR_BYTES = _vector_bytes()
# CPUs (in LLVM's names) whose vector multiply-add takes 5 cycles at two a cycle, AMD Zen 2 and Intel
# Haswell and Broadwell: they need 10 independent sums in flight, where a block of 4 rows keeps 8
# (enough at the 4 cycles of Zen 3 and later, and of Skylake and later); ``gemm`` gives them 6 rows
LONG_FMA = (numba.config.CPU_NAME or llvm.get_host_cpu_name()) in ("znver2", "haswell", "broadwell")
FASTMATH = {"nsz", "arcp", "contract", "reassoc"}
CONTRACT = {"contract"}


def _package_stamp():
    # (name, mtime, size) of every module of this package: a kernel's compiled code includes the
    # helpers it calls and the constants it reads from other modules, which Numba's own stamp
    # (the kernel's file only) does not see
    here = os.path.dirname(os.path.abspath(__file__))
    return tuple((f, (st := os.stat(os.path.join(here, f))).st_mtime, st.st_size)
                 for f in sorted(os.listdir(here)) if f.endswith(".py"))


class TolerantCache(FunctionCache):
    """Numba's on-disk cache, stamped with every module of the kernels package rather than the
    kernel's own file (an edit to a helper or a constant elsewhere makes it stale), in files of
    each vector width (``VECTOR_BYTES``: code of either width is kept, and a process of the other
    width neither loads nor overwrites it), and where an unreadable entry (a truncated index, a
    corrupted data file) is a miss: the cache is reset with a warning and the kernel recompiles,
    where Numba itself would raise from the call."""

    STAMP = _package_stamp()

    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file = IndexDataCacheFile(self._cache_path, f"{self._impl.filename_base}.v{VECTOR_BYTES}",
                                              self.STAMP)

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:
            warnings.warn(f"fastffnn: the Numba cache of {self._name} was unreadable "
                          f"({type(exc).__name__}: {exc}); it was reset and the kernel recompiles.",
                          RuntimeWarning, stacklevel=2)
            self.flush()        # a fresh, empty index, so the new compilation can be saved
            return None


class KernelCache(TolerantCache):
    """The cache of a jitted kernel: before a kernel is looked up, the native gemm of each float
    dtype among its arguments is made known to LLVM (``gemm.link``), because the kernel's machine
    code calls it by name, and a kernel loaded without it would call address 0.  (A kernel compiled
    here links it as its code is generated.)"""

    def load_overload(self, sig, target_context):
        from .gemm import link      # gemm imports this module
        for dtype in {t.dtype for t in sigutils.normalize_signature(sig)[0] if isinstance(t, types.Array)}:
            if dtype in (types.float64, types.float32):
                link(dtype)
        return super().load_overload(sig, target_context)


class KernelOnlyDispatcher(CPUDispatcher):
    """The dispatcher of a ``jit(python=False)`` helper: other kernels type and call it as any
    other; a call from Python raises TypeError, where its missing wrapper (a null entry point)
    would crash the interpreter."""

    def __call__(self, *args, **kwargs):
        name = f"{self.py_func.__module__}.{self.py_func.__qualname__}"
        raise TypeError(f"{name} is compiled for other kernels only (jit(python=False)): it has no Python "
                        f"wrapper, so Python cannot call it. Call the kernel that uses it, or compile it with "
                        f"jit() to call it from Python.")


def jit(func=None, *, nogil=NOGIL, cache=CACHE, parallel=False, inline="never", error_model="python",
        fastmath=FASTMATH, python=True):
    """``numba.njit`` with the project's options; the one decorator kernels use.

    ``error_model="numpy"`` is for a loop that divides by what cannot be zero (Adam's
    denominator, at least eps > 0): Python's model tests every divisor for zero to raise
    ZeroDivisionError, a branch that keeps LLVM from vectorising the loop.

    ``inline="always"`` is for the small helpers of the inner loops (sigmoid, a softmax row, the
    gemm's last column): inlined at Numba's IR level, their branches fold on the caller's constant
    arguments and their loops vectorise in the caller's context, which LLVM's own inlining of a
    separate function does not guarantee.  It is also for thin wrappers (``gemm``,
    ``dense_forward``, ``dense_backward``), which would otherwise be compiled on their own for
    nothing.  Inlining more does not make a cold start faster but slower: an inlined function is
    typed and lowered again at each of its call sites.

    ``python=False`` is for a helper that only other kernels call: Numba then generates neither its
    CPython wrapper nor its C one, whose unboxing code is a large part of a small function's
    compiling (the span kernels' ten such helpers took a cold start from a median of 9.7 to 9.35 s
    in float64 and 9.5 to 9.2 s in float32 on Zen 4); a call from Python raises
    (``KernelOnlyDispatcher``)."""
    def decorate(f):
        dispatcher = numba.njit(nogil=nogil, cache=cache, fastmath=fastmath, parallel=parallel, inline=inline,
                                error_model=error_model, no_cpython_wrapper=not python,
                                no_cfunc_wrapper=not python)(f)
        if not python:      # the options as njit settled them, on the class that refuses Python's calls
            dispatcher = KernelOnlyDispatcher(f, targetoptions=dispatcher.targetoptions)
        if cache:
            dispatcher._cache = KernelCache(f)
        return dispatcher
    return decorate if func is None else decorate(func)


class Specialised:
    """A kernel compiled apart for each value of some integer or bool arguments (``numba.literally``
    in its body: the activation and whether the output is one sigmoid, so that a run compiles its
    own branches alone), as Python calls it.  Called directly, such a dispatcher types the kernel
    again on every call before it finds the literals it wants, a third of a second here; this looks
    up the machine code by those arguments' values and the other arguments' type fingerprints
    (Numba's own, in C) and calls it.  Anything else -- the cache, ``py_func``, the signatures -- is
    the dispatcher's."""

    def __init__(self, dispatcher, *positions: int):
        self.dispatcher, self.positions, self._entries = dispatcher, positions, {}

    def __call__(self, *args):
        key = (*(args[i] for i in self.positions), *map(compute_fingerprint, args))
        entry = self._entries.get(key)
        if entry is None:
            sig = tuple(types.literal(bool(a) if isinstance(a, (bool, np.bool_)) else int(a)) if i in self.positions
                        else numba.typeof(a) for i, a in enumerate(args))
            entry = self._entries[key] = self.dispatcher.compile(sig)
        return entry(*args)

    def __getattr__(self, name):
        return getattr(self.dispatcher, name)


def cfunc(func, sig):
    """``func`` compiled for ``sig`` as a C callback with the project's options and cache, which
    jitted code calls by address or name rather than links (``gemm.link``)."""
    native = CFunc(func, (sig.args, sig.return_type), locals={}, options={"fastmath": FASTMATH})
    if CACHE:
        native._cache = TolerantCache(func)
    native.compile()
    return native


# Activation codes shared by kernels and the Python registry (fastffnn.network).
RELU, LEAKY_RELU, TANH, SIGMOID = 0, 1, 2, 3
IDENTITY = -1      # the output layer: logits are left as they are
LEAKY_SLOPE = 0.01

# Rows of a batch that go through forward and backward together (span._step): the most, a power
# of two up to CHUNK_ROWS, whose activations of every layer take at most CHUNK_FOOTPRINT bytes
# (their deltas as many again), and never fewer than CHUNK_BYTES of one element of each row --
# 128 rows in float64, 256 in float32.  The seed network's 512 samples (layers 32, 32, 1) are one
# chunk in either dtype; 100-256-128-1 takes 128 rows in float64 and 256 in float32.  Longer
# chunks give the products more of the sum over the batch per pass (float32 256 rows against 128:
# seed 1.07x, wide 1.01x; seed float64 512 against 128: about 1.03x, Zen 2, alternated).
CHUNK_BYTES = 1024
CHUNK_ROWS = 512
CHUNK_FOOTPRINT = 512 * 1024

# Optimizer codes shared by kernels and the Python registry (fastffnn.hyperparams.OPTIMIZERS): a
# run-time switch read from the hyperparameter row, so one compiled kernel serves both.
SGD, ADAM = 0, 1

# One instance's hyperparameter row, ``hyper`` (H,), read by the span kernels: its columns, named
# as the fields of ``fastffnn.HyperParams`` they hold (the optimizer as its code).
HYPER_COLUMNS = ("lr", "l2", "momentum", "batch_size", "penalty", "optimizer", "beta1", "beta2", "eps")
LR, L2, MOMENTUM, BATCH_SIZE, PENALTY, OPTIMIZER, BETA1, BETA2, EPS = (
    HYPER_COLUMNS.index(name) for name in
    ("lr", "l2", "momentum", "batch_size", "penalty", "optimizer", "beta1", "beta2", "eps"))
N_HYPER = len(HYPER_COLUMNS)

# One optimizer step's coefficients, in the dtype of the parameters (``span._coefficients``), as
# both forms of the step read them: span's loops over the parameters and the step epilogues of
# gemm's weight gradients.  Adam's bias corrections are in the step size and the root:
# p -= size * m / (sqrt(v) * root + eps), size = lr / (1 - b1^t), root = 1 / sqrt(1 - b2^t).
STEP_COLUMNS = ("lr", "l2", "momentum", "beta1", "beta2", "eps", "size", "root")
S_LR, S_L2, S_MOMENTUM, S_BETA1, S_BETA2, S_EPS, S_SIZE, S_ROOT = range(len(STEP_COLUMNS))
