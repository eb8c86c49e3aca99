"""``exp`` and ``log1p`` in arithmetic alone, so that a loop calling them vectorises.

LLVM's loop vectoriser leaves a loop that calls libm's scalar ``exp`` or ``log1p`` scalar (Numba
has no vector math library without Intel's SVML); the same functions written as a range reduction
and a polynomial are multiply-adds, compares and selects, which it takes four or eight lanes at a
time.  They serve the binary cross-entropy (``layers.sigmoid_xent``), one ``exp`` and one ``log1p``
per sample; each is within one ulp of the correctly rounded result (``tests/test_kernels.py``).

Both are evaluated in float64 whatever the caller's dtype, and their range reductions depend on
the order of their operations: a caller compiles them with ``config.CONTRACT`` (fused multiply-add
only), never with ``FASTMATH``'s reassociation, which would fold ``(t + MAGIC) - MAGIC`` into
``t`` and the two halves of ``n * ln 2`` into one rounded product.
"""
import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .config import CONTRACT, jit

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
LN2_HI = 6.93147180369123816490e-01     # ln 2 to 32 bits: n * LN2_HI is exact for |n| < 2**21
LN2_LO = 1.90821492927058770002e-10     # ln 2 - LN2_HI
MAGIC = 6755399441055744.0              # 1.5 * 2**52: t + MAGIC rounds t to an integer, kept in the low bits
EXP_MIN = -708.3964185322641            # log(2**-1022): below it exp is subnormal and flushed to zero
_EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(14))     # |r| <= ln 2 / 2: error < 5e-18
_ATANH_ODD = tuple(1.0 / (2 * k + 1) for k in range(1, 12))          # |s| <= 0.2: error < 2e-17


def emit_muladd(builder, x, y, z):
    """x * y + z in LLVM IR, floats or vectors of floats of one type: ``llvm.fmuladd``, which the
    code generator fuses into one FMA wherever the CPU has it, and nowhere else -- the same choice
    in every function, where a multiply and an add with ``contract`` may each be fused with another
    neighbour (which of ``a * b + c * d``'s products is, is the compiler's)."""
    ty = x.type
    element = ty.element if isinstance(ty, ir.VectorType) else ty
    name = f"llvm.fmuladd.{f'v{ty.count}' if isinstance(ty, ir.VectorType) else ''}" \
           f"{'f64' if isinstance(element, ir.DoubleType) else 'f32'}"
    return builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3), name), [x, y, z])


@intrinsic
def muladd(typingctx, x, y, z):
    """x * y + z for floats of one type (``emit_muladd``): rounded once where the CPU has FMA,
    twice elsewhere, as the gemm's step epilogue rounds it (``span._step_range``)."""
    if not (x == y == z and isinstance(x, types.Float)):
        raise TypingError(f"muladd: three floats of one type, got {x}, {y}, {z}")

    def codegen(context, builder, signature, args):
        return emit_muladd(builder, *args)
    return x(x, y, z), codegen


@intrinsic
def _float_bits(typingctx, x):
    # the IEEE bits of a float64 as an int64 (a bitcast, which vectorises)
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _bits_float(typingctx, bits):
    # the float64 of the IEEE bits in an int64
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@jit(inline="always", fastmath=CONTRACT)
def exp_nonpositive(x):
    # exp(x) for a float64 x <= 0 (and -inf: 0; NaN: NaN); 0 where exp(x) < 2**-1022.
    # x = n ln 2 + r with n = round(x / ln 2), |r| <= ln 2 / 2, the two products of Cody and Waite;
    # exp(r) by its Taylor polynomial of degree 13 (Horner); 2**n built in the exponent bits
    xc = x if x >= EXP_MIN else EXP_MIN
    t = xc * LOG2E + MAGIC
    n = t - MAGIC
    r = (xc - n * LN2_HI) - n * LN2_LO
    p = _EXP_TAYLOR[13]
    for k in range(12, -1, -1):
        p = p * r + _EXP_TAYLOR[k]
    # the low bits of t hold n in two's complement; + 1023, shifted into the exponent field
    scale = _bits_float((_float_bits(t) + 1023) << 52)
    return p * scale if x >= EXP_MIN else (0.0 if x < EXP_MIN else x)


@jit(inline="always", fastmath=CONTRACT)
def log1p_unit(e):
    # log(1 + e) for a float64 e in [0, 1] (NaN: NaN).  1 + e = 2**k (1 + f), k = 1 if e >= 1/2 with
    # f = (e - 1) / 2 in [-1/4, 0] (exact), else k = 0 and f = e; then log(1 + f) = 2 atanh(s),
    # s = f / (2 + f), |s| <= 0.2, written f - s (f - R) with R = 2 s^2 (1/3 + s^2/5 + ...) so that
    # the leading term f is exact (fdlibm's arrangement)
    big = e >= 0.5
    f = (e - 1.0) * 0.5 if big else e
    s = f / (2.0 + f)
    z = s * s
    q = _ATANH_ODD[10]
    for k in range(9, -1, -1):
        q = q * z + _ATANH_ODD[k]
    hfsq = 0.5 * f * f
    return (LN2_HI if big else 0.0) - ((hfsq - (s * (hfsq + 2.0 * z * q) + (LN2_LO if big else 0.0))) - f)
