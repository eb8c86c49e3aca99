"""The one matrix product of the kernels: ``out (R, C) = op(A) @ W``, optionally added to ``out``.

Numba has no vector types, and LLVM's SLP vectoriser does not turn a register block of scalar
accumulators into vector registers, so the inner block is written directly in LLVM IR
(``_define_tile``): an ``MR x NV`` block of vector accumulators (NV vectors of 32 bytes along a
row of C) is loaded once, updated by one rank-1 product per step of the reduction -- NV vector
loads of W, MR broadcasts of A, MR x NV multiply-adds -- and stored once.  That is the classic
GEMM micro-kernel; it needs nothing from the CPU beyond what LLVM legalises (AVX2 FMA where
present, narrower vectors elsewhere).  ``gemm`` tiles ``out`` with it and finishes the edges
(rows past the last full block, columns past the last full vector pair) in plain Numba.

The reduction runs in order k = 0, 1, ... for every element, whatever the tile, so a result does
not depend on where an element falls (bit-identical across backends and instance counts).
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .config import jit

VECTOR_BYTES = 32           # one AVX2 register; LLVM splits it where the CPU has narrower ones
NV = 2                      # vectors per row of a block: 8 float64 or 16 float32 columns
ROWS_F64, ROWS_F32 = 6, 4   # rows of a block: 12 resp. 8 accumulators; measured best on AVX2
_I64 = ir.IntType(64)


def _define_tile(module, fty, rows):
    """``void tile(fty* out, i64 ldo, fty* a, i64 a_row, i64 a_k, fty* w, i64 ldw, i64 K, i1 acc)``:
    out[m, n] (+)= sum_k a[m * a_row + k * a_k] * w[k * ldw + n] for a ``rows x NV vectors`` block.
    Defined once per LLVM module (internal, always inlined)."""
    name = f"fastffnn_tile_{fty}_{rows}"
    if name in module.globals:
        return module.globals[name]
    vl = VECTOR_BYTES // (8 if isinstance(fty, ir.DoubleType) else 4)
    align = 8 if isinstance(fty, ir.DoubleType) else 4
    ptr, vty = fty.as_pointer(), ir.VectorType(fty, vl)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, _I64, ptr, _I64, _I64, ptr, _I64, _I64,
                                                             ir.IntType(1)]), name)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    out, ldo, a, a_row, a_k, w, ldw, K, acc = fn.args
    for p in (out, a, w):
        p.add_attribute("noalias")
    entry, load, init = fn.append_basic_block("entry"), fn.append_basic_block("load"), fn.append_basic_block("init")
    loop, body, done = fn.append_basic_block("loop"), fn.append_basic_block("body"), fn.append_basic_block("done")
    b = ir.IRBuilder(entry)

    def const(v):
        return ir.Constant(_I64, v)

    def vector_at(base, offset):
        return b.bitcast(b.gep(base, [offset]), vty.as_pointer())

    def out_at(m, n):
        return vector_at(out, b.add(b.mul(const(m), ldo), const(n * vl)))

    blocks = [(m, n) for m in range(rows) for n in range(NV)]
    b.cbranch(acc, load, init)
    b.position_at_end(load)
    loaded = [b.load(out_at(m, n), align=align) for m, n in blocks]
    b.branch(init)
    b.position_at_end(init)
    start = []
    for v in loaded:
        phi = b.phi(vty)
        phi.add_incoming(v, load)
        phi.add_incoming(ir.Constant(vty, None), entry)
        start.append(phi)
    b.branch(loop)

    b.position_at_end(loop)
    k = b.phi(_I64)
    accs = [b.phi(vty) for _ in blocks]
    k.add_incoming(const(0), init)
    for phi, v in zip(accs, start):
        phi.add_incoming(v, init)
    b.cbranch(b.icmp_signed("<", k, K), body, done)

    b.position_at_end(body)
    row = b.mul(k, ldw)
    wv = [b.load(vector_at(w, b.add(row, const(n * vl))), align=align) for n in range(NV)]
    ak = b.mul(k, a_k)
    undef = ir.Constant(vty, ir.Undefined)
    broadcast = ir.Constant(ir.VectorType(ir.IntType(32), vl), [0] * vl)
    new = []
    for m in range(rows):
        am = b.load(b.gep(a, [b.add(ak, b.mul(const(m), a_row))]), align=align)
        splat = b.shuffle_vector(b.insert_element(undef, am, ir.Constant(ir.IntType(32), 0)), undef, broadcast)
        for n in range(NV):
            # mul + add with `contract`: one FMA where the CPU has it, the same rounding order anywhere
            product = b.fmul(splat, wv[n], flags=("contract",))
            new.append(b.fadd(accs[m * NV + n], product, flags=("contract",)))
    k.add_incoming(b.add(k, const(1)), body)
    for phi, v in zip(accs, new):
        phi.add_incoming(v, body)
    b.branch(loop)

    b.position_at_end(done)
    for (m, n), v in zip(blocks, accs):
        b.store(v, out_at(m, n), align=align)
    b.ret_void()
    return fn


def _tile_intrinsic(rows_f64, rows_f32):
    @intrinsic
    def tile(typingctx, out, o_off, A, a_off, a_row, a_k, W, w_off, K, accumulate):
        # the block at out's element o_off; A's first element a_off; W's first element w_off
        arrays = (out, A, W)
        if not all(isinstance(x, types.Array) and x.layout == "C" for x in arrays) or \
                len({x.dtype for x in arrays}) != 1 or out.dtype not in (types.float64, types.float32):
            raise TypingError(f"gemm tile: C-contiguous float64 or float32 arrays of one dtype, got {arrays}")

        def codegen(context, builder, sig, args):
            out_, o_off_, A_, a_off_, a_row_, a_k_, W_, w_off_, K_, acc_ = args
            fty = context.get_value_type(sig.args[0].dtype)
            fn = _define_tile(builder.module, fty, rows_f64 if isinstance(fty, ir.DoubleType) else rows_f32)

            def element(value, ty, offset):
                return builder.gep(cgutils.create_struct_proxy(ty)(context, builder, value=value).data, [offset])

            ldo = cgutils.unpack_tuple(builder, cgutils.create_struct_proxy(sig.args[0])(
                context, builder, value=out_).shape)[1]
            ldw = cgutils.unpack_tuple(builder, cgutils.create_struct_proxy(sig.args[6])(
                context, builder, value=W_).shape)[1]
            if acc_.type != ir.IntType(1):
                acc_ = builder.trunc(acc_, ir.IntType(1))
            builder.call(fn, [element(out_, sig.args[0], o_off_), ldo, element(A_, sig.args[2], a_off_), a_row_,
                              a_k_, element(W_, sig.args[6], w_off_), ldw, K_, acc_])
            return context.get_dummy_value()

        i64 = types.int64
        return types.void(out, i64, A, i64, i64, i64, W, i64, i64, types.boolean), codegen
    return tile


_tile_block = _tile_intrinsic(ROWS_F64, ROWS_F32)
_tile_row = _tile_intrinsic(1, 1)


@jit
def gemm(out, A, trans_a, W, accumulate):
    # out (R, C) = op(A) @ W, added to out when accumulate; op(A) = A (R, K), or A.T for A (K, R)
    # when trans_a; W (K, C).  All C-contiguous, one dtype.
    R, C = out.shape
    K = W.shape[0]
    a_row, a_k = (1, A.shape[1]) if trans_a else (A.shape[1], 1)
    rows = ROWS_F64 if out.itemsize == 8 else ROWS_F32
    cols = NV * VECTOR_BYTES // out.itemsize
    rb, cb = R - R % rows, C - C % cols
    for r in range(0, rb, rows):
        for c in range(0, cb, cols):
            _tile_block(out, r * C + c, A, r * a_row, a_row, a_k, W, c, K, accumulate)
    for r in range(rb, R):
        for c in range(0, cb, cols):
            _tile_row(out, r * C + c, A, r * a_row, a_row, a_k, W, c, K, accumulate)
    if cb == C:
        return
    # the last columns, fewer than a vector pair (the output layer's one logit)
    if not accumulate:
        out[:, cb:] = 0.0
    if trans_a:
        for c in range(cb, C):
            for k in range(K):
                w = W[k, c]
                for r in range(R):
                    out[r, c] += A[k, r] * w
    else:
        for r in range(R):
            for c in range(cb, C):
                s = out[r, c]
                for k in range(K):
                    s += A[r, k] * W[k, c]
                out[r, c] = s
