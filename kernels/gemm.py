"""The one matrix product of the kernels: ``out (R, C) = op(A) @ W``, optionally added to ``out``.

Numba has no vector types, and LLVM's SLP vectoriser does not turn a register block of scalar
accumulators into vector registers, so the inner block is written directly in LLVM IR
(``_define_tile``): an ``MR x NV`` block of vector accumulators (NV vectors of 32 bytes along a
row of C) is loaded once, updated by one rank-1 product per step of the reduction -- NV vector
loads of W, MR broadcasts of A, MR x NV multiply-adds -- and stored once.  That is the classic
GEMM micro-kernel; it needs nothing from the CPU beyond what LLVM legalises (AVX2 FMA where
present, narrower vectors elsewhere).  The gemm tiles ``out`` with it -- full blocks, then pairs
and single rows for the rows past the last block, each in a loop of LLVM IR too (``_define_tiles``)
-- and finishes the columns past the last full vector pair in plain Numba.  A large product first
copies what its tiles share into contiguous panels, as GotoBLAS packs
(``_define_packed``), so that rows of an operand a power of two apart do not evict one another
from L1.  The block may end in
an epilogue (``gemm_fused``): bias and relu after the forward product, the relu derivative after
the input gradient, so no pass over memory is spent on either; and after a weight gradient, the
optimizer's step on the weights (``gemm_step``), so the gradient is never stored; Adam's, in 64-byte
vectors, spread through the next tile's reduction, beside whose multiply-adds the divider runs.

All of that is one native function per dtype (``gemm_native``), compiled once -- a C callback,
cached like every kernel -- and called by its name (``link``).  Numba links into each compiled
function the code of everything it calls, and optimises and generates all of it again; the gemm
is most of the kernels' code, and linked it was compiled again in every kernel up to the span,
the better part of a cold start.  A call per product costs nothing next to the product.

In every tile shape an element is reduced in order k = 0, 1, ..., so a row's result does not
depend on where the row falls (a sample's numbers do not depend on its place in the batch); and
every backend calls the same code on the same shapes, so results are bit-identical across them.
"""
import llvmlite.binding as llvm
from llvmlite import ir
from numba import carray, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .config import LONG_FMA, S_L2, STEP_COLUMNS, VECTOR_BYTES, cfunc, jit
from .elementary import emit_muladd

NV = 2                      # vectors per row of a block: 8 float64 or 16 float32 columns
ROWS_F64 = 6                # rows of a float64 block: 12 accumulators
# rows of a float32 block, and of a float64 block of A @ W for a W smaller than PACK_BYTES (the seed
# network's products): 4, 8 accumulators, the least that keep both FMA pipes busy at a latency of 4
# cycles, with fewer rows left over for pairs (128 rows: 32 blocks, not 21 and a pair); measured
# best on Zen 3, 2-5 % faster than 6 rows on the seed network's float64 products.  6 where the
# latency is 5 (config.LONG_FMA), on Zen 2 measured faster on every workload it changes; and in
# 64-byte vectors, whose 32 registers hold 12 accumulators beside Adam's deferred step: on Zen 4
# seed 1.02x, seed float32 1.01x and wide float32 1.02x (medians of alternated pairs)
ROWS_F32 = ROWS_F64_SMALL = 6 if LONG_FMA or VECTOR_BYTES == 64 else 4
_I64 = ir.IntType(64)
PANEL_K = 256               # the longest reduction a packed panel holds (the kernels': a chunk, a fan-in)
PACK_TILES = 8              # the fewest tiles that share a packed panel (measured)
PACK_BYTES = 16 * 1024      # the smallest W whose panels are packed: a smaller one stays in L1 (measured)
# The epilogues, as gemm_fused and gemm_step take them (any integer, constant or not): none, the
# forward's and the input gradient's (gemm_fused); the optimizer's step on a weight from its
# gradient, for plain SGD, SGD with momentum and Adam (gemm_step, a weight gradient's)
NONE, ACT, GATE, PLAIN_STEP, MOMENTUM_STEP, ADAM_STEP = 0, 1, 2, 3, 4, 5
# Adam's step on a weight gradient's tile spread through the next tile's reduction (_define_tile's
# defer) rather than in its own epilogue: where the divider runs beside the multiply-adds of a
# broadcast operand (bench_divider: on Zen 4, 3.8 ns of square root and division a vector add
# 0.02-0.9 ns, from run to run; on Zen 2 all of their time), and the 32 vector registers hold the
# step beside a tile
DEFER_ADAM = VECTOR_BYTES == 64
# Row counts of the tile shapes: a full block; a pair, for the rows past the last block (a 1-row
# tile over a long reduction is bound by the multiply-add latency with only NV chains); one row,
# for an odd row left; and the full block of a small float64 A @ W (ROWS_F64_SMALL), which is
# never packed.  Each element sums over k in the same order in every shape.
BLOCK, PAIR, ROW, SMALL = 0, 1, 2, 3
_SHAPES = ((ROWS_F64, ROWS_F32), (2, 2), (1, 1), (ROWS_F64_SMALL, ROWS_F32))


def _define_tile(module, fty, rows, steps, defer=False):
    """``void tile(fty* out, i64 ldo, fty* a, i64 a_row, i64 a_k, fty* w, i64 ldw, i64 K, i1 acc,
    i64 epilogue, fty* vec, fty* gate, i64 ldg, fty slope, fty* first, fty* second, fty* coef,
    vector* pending, i64* at, i64* count)``:
    out[m, n] (+)= sum_k a[m * a_row + k * a_k] * w[k * ldw + n] for a ``rows x NV vectors``
    block, then the epilogue on the block in registers before it is stored:

    - ``NONE``;
    - ``ACT``: v = v + vec[n]; v = v if v > 0 else slope * v -- the bias, then relu (slope 0: a
      NaN stays NaN), leaky relu, or identity (slope 1);
    - ``GATE``: v = v if gate[m * ldg + n] > 0 else slope * v -- the relu / leaky relu
      derivative, gate being the activation;
    - where ``steps`` (the tiles of a weight gradient, ``A.T @ W``), ``PLAIN_STEP``,
      ``MOMENTUM_STEP``, ``ADAM_STEP``: v is the gradient of the weight gate (its moments first,
      second, all ldg apart), which takes the optimizer's step in place with the coefficients
      coef (``_emit_step``); out is not written.

    The epilogue is chosen after the reduction, by a switch that one product always takes the
    same way.  Defined once per LLVM module (internal, always inlined).

    ``defer``: the tile of a weight gradient whose epilogue is ``ADAM_STEP``, its step deferred
    (``DEFER_ADAM``).  The ``count`` vectors of gradient at ``pending``, which the tile before left
    with the addresses of their weights (``at``), take their steps spread through this tile's
    reduction, one every ``K // (rows * NV)`` of its steps (those it is too short for, after it);
    then this tile leaves its own gradient there in their place, for the next tile or, after the
    last, ``_emit_pending``.  Only that tile reads the pending arguments."""
    name = f"fastffnn_tile_{fty}_{rows}{'_steps' if steps else ''}{'_defer' if defer else ''}"
    if name in module.globals:
        return module.globals[name]
    ptr = fty.as_pointer()
    vl, align = _lanes(fty)
    vty = ir.VectorType(fty, vl)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, _I64, ptr, _I64, _I64, ptr, _I64, _I64, ir.IntType(1),
                                                             _I64, ptr, ptr, _I64, fty, ptr, ptr, ptr, vty.as_pointer(),
                                                             _I64.as_pointer(), _I64.as_pointer()]), name)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    out, ldo, a, a_row, a_k, w, ldw, K, acc, epilogue, vec, gate, ldg, slope, first, second, coef = fn.args[:17]
    pending = fn.args[17:]
    for p in (a, w):        # not out: it may be the gate (gemm_fused)
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

    def splat(value):
        undef = ir.Constant(vty, ir.Undefined)
        broadcast = ir.Constant(ir.VectorType(ir.IntType(32), vl), [0] * vl)
        return b.shuffle_vector(b.insert_element(undef, value, ir.Constant(ir.IntType(32), 0)), undef, broadcast)

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
    if defer:
        waiting = b.load(pending[2])
        spacing = b.sdiv(K, const(len(blocks)))
        spacing = b.select(b.icmp_signed(">", spacing, const(0)), spacing, const(1))
    b.branch(loop)

    b.position_at_end(loop)
    k = b.phi(_I64)
    accs = [b.phi(vty) for _ in blocks]
    k.add_incoming(const(0), init)
    for phi, v in zip(accs, start):
        phi.add_incoming(v, init)
    if defer:
        # the next pending vector, and the step of the reduction at which it takes its step
        j, due = b.phi(_I64), b.phi(_I64)
        j.add_incoming(const(0), init)
        due.add_incoming(const(0), init)
    b.cbranch(b.icmp_signed("<", k, K), body, done)

    b.position_at_end(body)
    row = b.mul(k, ldw)
    wv = [b.load(vector_at(w, b.add(row, const(n * vl))), align=align) for n in range(NV)]
    ak = b.mul(k, a_k)
    new = []
    for m in range(rows):
        am = splat(b.load(b.gep(a, [b.add(ak, b.mul(const(m), a_row))]), align=align))
        for n in range(NV):
            # mul + add with `contract`: one FMA where the CPU has it, the same rounding order anywhere
            product = b.fmul(am, wv[n], flags=("contract",))
            new.append(b.fadd(accs[m * NV + n], product, flags=("contract",)))
    latch = body
    if defer:
        spread, latch = fn.append_basic_block("spread"), fn.append_basic_block("latch")
        b.cbranch(b.and_(b.icmp_signed("==", k, due), b.icmp_signed("<", j, waiting)), spread, latch)
        b.position_at_end(spread)
        _emit_pending(b, fty, pending, j, gate, first, second, coef)
        stepped = (b.add(j, const(1)), b.add(due, spacing))
        spread = b.block        # _emit_pending's own blocks end where the step does
        b.branch(latch)
        b.position_at_end(latch)
        for phi, value in zip((j, due), stepped):
            after = b.phi(_I64)
            after.add_incoming(value, spread)
            after.add_incoming(phi, body)
            phi.add_incoming(after, latch)
    k.add_incoming(b.add(k, const(1)), latch)
    for phi, v in zip(accs, new):
        phi.add_incoming(v, latch)
    b.branch(loop)

    b.position_at_end(done)
    if defer:
        _emit_pending_range(b, fty, pending, j, waiting, gate, first, second, coef)
        for i, ((m, n), v) in enumerate(zip(blocks, accs)):
            b.store(v, b.gep(pending[0], [const(i)]), align=VECTOR_BYTES)
            weight = b.gep(gate, [b.add(b.mul(const(m), ldg), const(n * vl))])
            b.store(b.ptrtoint(weight, _I64), b.gep(pending[1], [const(i)]))
        b.store(const(len(blocks)), pending[2])
        b.ret_void()
        return fn
    zero, slopes = ir.Constant(vty, None), splat(slope)

    def store(results):
        for (m, n), v in zip(blocks, results):
            b.store(v, out_at(m, n), align=align)
        b.ret_void()

    def scaled(gates, results):
        return [b.select(b.fcmp_ordered(">", g, zero), v, b.fmul(v, slopes)) for g, v in zip(gates, results)]

    act, gated, plain = (fn.append_basic_block(n) for n in ("act", "gate", "none"))
    switch = b.switch(epilogue, plain)
    switch.add_case(const(ACT), act)
    switch.add_case(const(GATE), gated)
    b.position_at_end(plain)
    store(accs)
    b.position_at_end(act)
    bias = [b.load(vector_at(vec, const(n * vl)), align=align) for n in range(NV)]
    biased = [b.fadd(v, bias[n]) for (m, n), v in zip(blocks, accs)]
    store(scaled(biased, biased))
    b.position_at_end(gated)
    store(scaled([b.load(vector_at(gate, b.add(b.mul(const(m), ldg), const(n * vl))), align=align)
                  for m, n in blocks], accs))
    if steps:
        stepped = fn.append_basic_block("step")
        for code in (PLAIN_STEP, MOMENTUM_STEP, ADAM_STEP):
            switch.add_case(const(code), stepped)
        b.position_at_end(stepped)
        b.call(_define_step(module, fty, rows), [epilogue, *accs, gate, first, second, ldg, coef])
        b.ret_void()
    return fn


def _define_step(module, fty, rows):
    """``void step(i64 code, vector g..., fty* weight, fty* first, fty* second, i64 ldg, fty*
    coef)``: the optimizer's step of ``code`` (``PLAIN_STEP``, ``MOMENTUM_STEP``, ``ADAM_STEP``)
    on a ``rows x NV vectors`` block of weights (and their moments), ldg apart, from its gradient,
    the tile's accumulators g, with the coefficients coef (``_emit_step``); always inlined (a call
    per tile, its vectors passed in memory, measured 1 % slower on the wide network, and it
    compiled no faster)."""
    name = f"fastffnn_step_{fty}_{rows}"
    if name in module.globals:
        return module.globals[name]
    vl, itemsize = _lanes(fty)
    vty, ptr = ir.VectorType(fty, vl), fty.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [_I64, *[vty] * (rows * NV), ptr, ptr, ptr, _I64, ptr]),
                     name)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    code, *rest = fn.args
    accs, (weight, first, second, ldg, coef) = rest[:rows * NV], rest[rows * NV:]
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def const(v):
        return ir.Constant(_I64, v)

    coefs, decays = _step_coefficients(b, vty, coef)
    cases = [(kind, fn.append_basic_block(f"step{kind}")) for kind in (PLAIN_STEP, MOMENTUM_STEP, ADAM_STEP)]
    switch = b.switch(code, cases[0][1])
    for kind, block in cases:
        switch.add_case(const(kind), block)
        b.position_at_end(block)
        for i, g in enumerate(accs):
            at = b.add(b.mul(const(i // NV), ldg), const(i % NV * vl))
            _emit_step(b, kind, g, *(b.bitcast(b.gep(x, [at]), vty.as_pointer()) for x in (weight, first, second)),
                       coefs, decays, itemsize)
        b.ret_void()
    return fn


def _step_coefficients(b, vty, coef):
    """The step's coefficients at coef (``STEP_COLUMNS``) splat in vectors of type vty, and
    whether L2 is on, as ``_emit_step`` takes them."""
    fty, align = vty.element, _lanes(vty.element)[1]
    lanes = ir.Constant(ir.VectorType(ir.IntType(32), vty.count), [0] * vty.count)

    def splat(i):
        value = b.load(b.gep(coef, [ir.Constant(_I64, i)]), align=align)
        return b.shuffle_vector(b.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(ir.IntType(32), 0)),
                                ir.Constant(vty, ir.Undefined), lanes)

    decays = b.fcmp_ordered("!=", b.load(b.gep(coef, [ir.Constant(_I64, S_L2)]), align=align), ir.Constant(fty, 0.0))
    return [splat(i) for i in range(len(STEP_COLUMNS))], decays


def _emit_pending(b, fty, pending, j, gate, first, second, coef):
    """Adam's step on the j-th vector of gradient at pending = (vectors, their weights' addresses,
    count) (``_define_tile``'s ``defer``), whose moments lie as far from the weight as first and
    second from gate.  The coefficients are loaded again for each vector rather than held in
    registers through the reduction it is spread over, beside the tile's accumulators."""
    vectors, at, _ = pending
    vty = vectors.type.pointee
    weight = b.load(b.gep(at, [j]))
    address = [b.add(weight, b.sub(b.ptrtoint(x, _I64), b.ptrtoint(gate, _I64))) for x in (first, second)]
    coefs, decays = _step_coefficients(b, vty, coef)
    _emit_step(b, ADAM_STEP, b.load(b.gep(vectors, [j]), align=VECTOR_BYTES),
               *(b.inttoptr(x, vty.as_pointer()) for x in (weight, *address)), coefs, decays, _lanes(fty)[1])


def _emit_pending_range(b, fty, pending, start, stop, gate, first, second, coef):
    """``_emit_pending`` on the pending vectors start:stop, in a loop."""
    with cgutils.for_range_slice(b, start, stop, ir.Constant(_I64, 1), _I64) as (j, _):
        _emit_pending(b, fty, pending, j, gate, first, second, coef)


def _emit_step(b, code, g, weight, first, second, coef, decays, align):
    """The optimizer's step in LLVM IR on one vector of weights at ``weight`` from their gradient
    g, the moments at first, second (vectors as well), coef the splat coefficients (``STEP_COLUMNS``)
    and ``decays`` whether L2 is on: the arithmetic of ``span._step_range`` in the same order, so
    a weight takes the same step in the epilogue as in span's loops."""
    lr, l2, mu, b1, b2, eps, size, root = coef
    w = b.load(weight, align=align)
    g = b.select(decays, emit_muladd(b, l2, w, g), g)
    if code == PLAIN_STEP:
        w = b.fsub(w, b.fmul(lr, g, flags=("contract",)), flags=("contract",))
    elif code == MOMENTUM_STEP:
        f = emit_muladd(b, mu, b.load(first, align=align), b.fneg(b.fmul(lr, g)))
        b.store(f, first, align=align)
        w = b.fadd(w, f)
    else:
        one = ir.Constant(g.type, [1.0] * g.type.count)
        m = emit_muladd(b, b1, b.load(first, align=align), b.fmul(b.fsub(one, b1), g))
        v = emit_muladd(b, b2, b.load(second, align=align), b.fmul(b.fsub(one, b2), b.fmul(g, g)))
        b.store(m, first, align=align)
        b.store(v, second, align=align)
        vty = g.type
        kind = "f64" if isinstance(vty.element, ir.DoubleType) else "f32"
        sqrt = cgutils.get_or_insert_function(b.module, ir.FunctionType(vty, [vty]), f"llvm.sqrt.v{vty.count}{kind}")
        w = b.fsub(w, b.fdiv(b.fmul(size, m), emit_muladd(b, b.call(sqrt, [v]), root, eps)))
    b.store(w, weight, align=align)


def _tiles_function(module, name, fty):
    """A new never-inlined function of the tiles' signature (``_define_tiles``), its arguments
    and a builder at its entry."""
    ptr = fty.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, _I64, ptr, _I64, ptr, _I64, _I64, ir.IntType(1), _I64,
                                                             ptr, ptr, _I64, fty, _I64, _I64, _I64, ptr, ptr, ptr]),
                     name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    for p in (fn.args[2], fn.args[4]):     # a, w; not out, which may be the gate (gemm_fused)
        p.add_attribute("noalias")
    return fn, fn.args, ir.IRBuilder(fn.append_basic_block("entry"))


def _define_tiles(module, fty, rows, trans, packs):
    """``void tiles(fty* out, i64 ldo, fty* a, i64 lda, fty* w, i64 ldw, i64 K, i1 acc, i64
    epilogue, fty* vec, fty* gate, i64 ldg, fty slope, i64 r0, i64 r1, i64 cb, fty* first, fty*
    second, fty* coef)``: rows r0:r1 of out in tiles of ``rows`` rows (r1 - r0 a multiple of it),
    columns 0:cb in tiles of a vector pair (cb a multiple of it), each tile the inlined
    ``_define_tile``; a is A (R, lda), or A.T for A (K, lda) when ``trans`` (whose tiles take the
    step epilogues too); vec, gate, first and second at out's first element (vec: the bias at
    column 0; gate: the gate's or the weight's first element); coef the step's coefficients.  A
    product large enough to pay for copying panels is handed to ``_define_packed``'s function
    when ``packs``.

    The loops are LLVM IR too, in a function of their own that is never inlined: one per shape,
    ``trans`` and ``packs``, rather than the tiles inlined in every loop of the native gemm.
    ``trans`` is a constant of the code, so the reduction steps through A by a constant stride."""
    name = f"fastffnn_tiles_{fty}_{rows}_{'t' if trans else 'n'}{'_packs' if packs else ''}"
    if name in module.globals:
        return module.globals[name]
    fn, args, b = _tiles_function(module, name, fty)
    K, ldw, r0, r1, cb = args[6], args[5], args[13], args[14], args[15]
    vl, itemsize = _lanes(fty)

    def const(v):
        return ir.Constant(_I64, v)

    # packing pays where a panel is read by PACK_TILES tiles or more, and W is larger than
    # PACK_BYTES (a smaller one stays in L1 as it is); a panel holds PANEL_K steps of the
    # reduction.  Full blocks only: the rows past them are too few to pay for it.
    if packs:
        pays = b.icmp_signed("<=", K, const(PANEL_K))
        if trans:
            pays = b.and_(pays, b.icmp_signed(">=", cb, const(PACK_TILES * NV * vl)))
        else:
            pays = b.and_(pays, b.and_(b.icmp_signed(">=", b.sub(r1, r0), const(PACK_TILES * rows)),
                                       b.icmp_signed(">=", b.mul(K, ldw), const(PACK_BYTES // itemsize))))
        with b.if_then(pays):
            b.call(_define_packed(module, fty, rows, trans), args)
            b.ret_void()
    if trans and DEFER_ADAM:
        # Adam's steps spread through the next tile's reduction, the last tile's after it
        with b.if_then(b.icmp_signed("==", args[8], const(ADAM_STEP))):
            vty = ir.VectorType(fty, vl)
            vectors = cgutils.alloca_once(b, vty, size=rows * NV)
            vectors.align = VECTOR_BYTES
            pending = (vectors, cgutils.alloca_once(b, _I64, size=rows * NV), cgutils.alloca_once_value(b, const(0)))
            _tiles_in_place(b, module, fty, rows, args, trans, pending)
            gate, first, second, coef = args[10], *args[16:19]
            _emit_pending_range(b, fty, pending, const(0), b.load(pending[2]), gate, first, second, coef)
            b.ret_void()
    _tiles_in_place(b, module, fty, rows, args, trans)
    b.ret_void()
    return fn


def _tiles_in_place(b, module, fty, rows, args, trans, pending=None):
    # the tiles row block by row block, reading A and W where they are; pending: the deferred
    # steps' buffers (_define_tile's defer)
    _, _, a, lda, w, ldw, _, _, _, _, _, _, _, r0, r1, cb, _, _, _ = args
    one = ir.Constant(_I64, 1)
    a_row, a_k = (one, lda) if trans else (lda, one)
    with cgutils.for_range_slice(b, r0, r1, ir.Constant(_I64, rows), _I64) as (r, _):
        with cgutils.for_range_slice(b, ir.Constant(_I64, 0), cb, ir.Constant(_I64, NV * _lanes(fty)[0]), _I64) as (c, _):
            _call_tile(b, module, fty, rows, args, r, c, b.gep(a, [b.mul(r, a_row)]), a_row, a_k, b.gep(w, [c]), ldw,
                       trans, pending)


def _define_packed(module, fty, rows, trans):
    """The tiles of ``_define_tiles`` (same signature and result, bit for bit) reading panels
    copied to contiguous buffers, for a product of at most PANEL_K steps of reduction:

    - ``A @ W``: a tile's columns of W are a cache line or two in each of K rows ldw apart, read
      again by every row block.  Each pair of vectors of columns is copied once into a contiguous
      panel (K x NV vectors) that the tiles of every row block read from L1, A's rows in order.
    - ``A.T @ W``: a block's rows are columns of A, lda apart, which for a power-of-two lda fall
      in a few sets of the L1 cache and evict one another.  In float64 they are copied once per
      block into a contiguous panel (K x rows) that every tile of the block reads from L1.  In
      float32, whose tiles read W twice as fast, W's rows ldw apart evict one another too: every
      block of A.T is copied once into a buffer from ``malloc`` (K x R), and the columns are swept
      as for ``A @ W``, each panel of W copied once and read by every block (measured on the wide
      network's weight gradients: 60-71 to 82-87 GFLOP/s; in float64 it was no faster).  Should
      ``malloc`` fail, the tiles read A and W in place."""
    name = f"fastffnn_packed_{fty}_{rows}_{'t' if trans else 'n'}"
    if name in module.globals:
        return module.globals[name]
    fn, args, b = _tiles_function(module, name, fty)
    a, lda, w, ldw, K, r0, r1, cb = args[2], args[3], args[4], args[5], args[6], args[13], args[14], args[15]
    vl, itemsize = _lanes(fty)
    vty = ir.VectorType(fty, vl)

    def const(v):
        return ir.Constant(_I64, v)

    def copy(source, target):
        b.store(b.load(source, align=itemsize), target, align=itemsize)

    def pack_block(r, to):
        # A.T's rows r:r + rows, columns of A lda apart, into a contiguous K x rows panel at to:
        # one vector copy per step of the reduction, of the least power of two of elements that
        # holds the rows (float32's 4: the wide network's weight gradients 1-2 % faster, its
        # training about 1 %).  For 6 rows that copy of 8 spills 2 past the step's place into the
        # next step's, which that step then overwrites, and reads past the block's columns only
        # into A's next row: so the last step copies element by element, and nothing is read past
        # A nor written past the panel.  (Element by element throughout, Zen 2's float32 blocks of
        # 6 rows took the weight gradients of the wide network 25 µs of their 210.)
        width = 1 << (rows - 1).bit_length()
        vector = ir.VectorType(fty, width).as_pointer()

        def copy_step(k, whole):
            column, at = b.gep(a, [b.add(b.mul(k, lda), r)]), b.gep(to, [b.mul(k, const(rows))])
            if whole:
                copy(*(b.bitcast(x, vector) for x in (column, at)))
            else:
                for i in range(rows):
                    copy(b.gep(column, [const(i)]), b.gep(at, [const(i)]))

        last = K if width == rows else b.sub(K, const(1))
        with cgutils.for_range_slice(b, const(0), last, const(1), _I64) as (k, _):
            copy_step(k, True)
        if width != rows:
            with b.if_then(b.icmp_signed(">", K, const(0))):
                copy_step(last, False)

    # the panels on the stack, allocated on entry: W's columns (A @ W, and A.T @ W in float32) or
    # A.T's block (A.T @ W in float64)
    panel = b.alloca(fty, size=const(PANEL_K * (rows if trans and itemsize == 8 else NV * vl)))

    def sweep_columns(a_block, a_row, a_k):
        # each pair of vectors of columns of W into a K x NV vectors panel, read by the tiles of
        # every row block r, which read A's block at a_block(r)
        with cgutils.for_range_slice(b, const(0), cb, const(NV * vl), _I64) as (c, _):
            with cgutils.for_range_slice(b, const(0), K, const(1), _I64) as (k, _):
                row, to = b.gep(w, [b.add(b.mul(k, ldw), c)]), b.gep(panel, [b.mul(k, const(NV * vl))])
                for n in range(NV):
                    copy(*(b.bitcast(b.gep(x, [const(n * vl)]), vty.as_pointer()) for x in (row, to)))
            with cgutils.for_range_slice(b, r0, r1, const(rows), _I64) as (r, _):
                _call_tile(b, module, fty, rows, args, r, c, a_block(r), a_row, a_k, panel, const(NV * vl), trans)

    if not trans:
        sweep_columns(lambda r: b.gep(a, [b.mul(r, lda)]), lda, const(1))
    elif itemsize == 8:
        with cgutils.for_range_slice(b, r0, r1, const(rows), _I64) as (r, _):
            pack_block(r, panel)
            with cgutils.for_range_slice(b, const(0), cb, const(NV * vl), _I64) as (c, _):
                _call_tile(b, module, fty, rows, args, r, c, panel, const(1), const(rows), b.gep(w, [c]), ldw, trans)
    else:
        i8p = ir.IntType(8).as_pointer()
        malloc = cgutils.get_or_insert_function(module, ir.FunctionType(i8p, [_I64]), "malloc")
        free = cgutils.get_or_insert_function(module, ir.FunctionType(ir.VoidType(), [i8p]), "free")
        raw = b.call(malloc, [b.mul(b.mul(K, b.sub(r1, r0)), const(itemsize))])
        with b.if_else(cgutils.is_null(b, raw)) as (missing, got):
            with missing:
                _tiles_in_place(b, module, fty, rows, args, trans)
            with got:
                blocks = b.bitcast(raw, fty.as_pointer())

                def block(r):       # A.T's block at row r: K x rows, after the blocks above it
                    return b.gep(blocks, [b.mul(b.sub(r, r0), K)])

                with cgutils.for_range_slice(b, r0, r1, const(rows), _I64) as (r, _):
                    pack_block(r, block(r))
                sweep_columns(block, const(1), const(rows))
                b.call(free, [raw])
    b.ret_void()
    return fn


def _lanes(fty):
    # elements of a vector, and bytes of an element, of the float type fty
    itemsize = 8 if isinstance(fty, ir.DoubleType) else 4
    return VECTOR_BYTES // itemsize, itemsize


def _call_tile(b, module, fty, rows, args, r, c, a_block, a_row, a_k, w_block, ldw, trans, pending=None):
    # the tile at row r, column c of out, reading A's block at a_block (a_row, a_k apart) and W's
    # columns at w_block (ldw apart); the bias from column c, the elements of gate, first and
    # second where the tile starts in out, the step's coefficients; with pending, the tile that
    # defers Adam's step (_define_tile's defer)
    out, ldo, _, _, _, _, K, acc, epilogue, vec, gate, ldg, slope = args[:13]
    first, second, coef = args[16:19]
    at = b.add(b.mul(r, ldg), c)
    defer = pending is not None
    if not defer:
        vty = ir.VectorType(fty, _lanes(fty)[0])
        pending = [ir.Constant(t, None) for t in (vty.as_pointer(), _I64.as_pointer(), _I64.as_pointer())]
    b.call(_define_tile(module, fty, rows, trans, defer),
           [b.gep(out, [b.add(b.mul(r, ldo), c)]), ldo, a_block, a_row, a_k, w_block, ldw, K, acc, epilogue,
            b.gep(vec, [c]), b.gep(gate, [at]), ldg, slope, b.gep(first, [at]), b.gep(second, [at]), coef, *pending])


@intrinsic(prefer_literal=True)
def _tiles(typingctx, out, A, W, accumulate, epilogue, vec, mat, slope, first, second, r0, r1, cb, trans, shape):
    """Rows r0:r1 of out, columns 0:cb, of op(A) @ W in tiles of ``shape`` (op(A) = A, or A.T when
    ``trans``; both compile-time constants; ``_define_tiles``) with ``epilogue``; ``ACT`` reads the
    bias ``vec`` (O,), ``GATE`` the gate ``mat`` (shaped like out), both ``slope``; a step the
    coefficients ``vec``, the weight ``mat`` and its moments ``first``, ``second`` (shaped like out)."""
    if not (isinstance(shape, types.IntegerLiteral) and isinstance(trans, types.BooleanLiteral)):
        raise TypingError("gemm tile: the tile shape and trans must be compile-time constants")
    transposed = trans.literal_value

    def codegen(context, builder, sig, args):
        out_, A_, W_, acc_, epilogue_, vec_, mat_, slope_, first_, second_, r0_, r1_, cb_ = args[:13]
        dtype = sig.args[0].dtype
        fty = context.get_value_type(dtype)
        double = isinstance(fty, ir.DoubleType)
        # SMALL is a float64 A @ W shape; elsewhere it is the full block (the same function)
        kind = BLOCK if shape.literal_value == SMALL and (transposed or not double) else shape.literal_value
        fn = _define_tiles(builder.module, fty, _SHAPES[kind][0 if double else 1], transposed, kind == BLOCK)

        def array(i):
            return cgutils.create_struct_proxy(sig.args[i])(context, builder, value=args[i])

        def row_stride(i):
            return cgutils.unpack_tuple(builder, array(i).shape)[1]

        if acc_.type != ir.IntType(1):
            acc_ = builder.trunc(acc_, ir.IntType(1))
        builder.call(fn, [array(0).data, row_stride(0), array(1).data, row_stride(1), array(2).data, row_stride(2),
                          cgutils.unpack_tuple(builder, array(2).shape)[0], acc_,
                          context.cast(builder, epilogue_, sig.args[4], types.int64), array(5).data,
                          array(6).data, row_stride(6), context.cast(builder, slope_, sig.args[7], dtype),
                          r0_, r1_, cb_, array(8).data, array(9).data, array(5).data])
        return context.get_dummy_value()

    i64 = types.int64
    return (types.void(out, A, W, types.boolean, i64, vec, mat, slope, first, second, i64, i64, i64, trans, shape),
            codegen)


@jit(inline="always")
def _all_tiles(out, A, W, accumulate, epilogue, vec, mat, slope, first, second, R, cb, trans):
    # out[:, :cb] of op(A) @ W: the full blocks, then the pairs and the single row past them
    small = out.itemsize == 8 and not trans and W.size * W.itemsize < PACK_BYTES
    rows = ROWS_F64_SMALL if small else (ROWS_F64 if out.itemsize == 8 else ROWS_F32)
    rb = R - R % rows
    rp = rb + (R - rb) // 2 * 2
    if small:
        # (typed for every dtype and trans, run only where small: float32 and A.T lower it as BLOCK)
        _tiles(out, A, W, accumulate, epilogue, vec, mat, slope, first, second, 0, rb, cb, trans, SMALL)
    else:
        _tiles(out, A, W, accumulate, epilogue, vec, mat, slope, first, second, 0, rb, cb, trans, BLOCK)
    _tiles(out, A, W, accumulate, epilogue, vec, mat, slope, first, second, rb, rp, cb, trans, PAIR)
    _tiles(out, A, W, accumulate, epilogue, vec, mat, slope, first, second, rp, R, cb, trans, ROW)


@jit(inline="always")
def _gemm_column(out, A, w):
    # out (R,) += A.T @ w (K,), A (K, R)
    R, K = out.shape[0], w.shape[0]
    for k in range(K):
        wk = w[k]
        for r in range(R):
            out[r] += A[k, r] * wk


def gemm_native(out_p, a_p, w_p, vec_p, mat_p, first_p, second_p, R, C, K, trans_a, accumulate, epilogue, slope):
    # gemm_fused or gemm_step on the arrays at these pointers, all C-contiguous: out (R, C); A (R, K),
    # or (K, R) when trans_a; W (K, C); vec (C,), or the step's coefficients; mat, first, second
    # (R, C).  Compiled as a C callback (``link``).
    out, W, vec, mat = carray(out_p, (R, C)), carray(w_p, (K, C)), carray(vec_p, C), carray(mat_p, (R, C))
    first, second = carray(first_p, (R, C)), carray(second_p, (R, C))
    A = carray(a_p, (K, R) if trans_a else (R, K))
    cb = C - C % (NV * VECTOR_BYTES // out.itemsize)
    acc = accumulate != 0
    if trans_a:
        _all_tiles(out, A, W, acc, epilogue, vec, mat, slope, first, second, R, cb, True)
    else:
        _all_tiles(out, A, W, acc, epilogue, vec, mat, slope, first, second, R, cb, False)
    if cb == C:
        return
    # the last columns, fewer than a vector pair, in plain Numba
    if trans_a:
        if not acc:
            out[:, cb:] = 0.0
        if C == 1:
            # one column (a binary output layer's weight gradient): as vectors, unit stride known
            # to the compiler
            _gemm_column(out.reshape(R), A, W.reshape(K))
        else:
            for c in range(cb, C):
                for k in range(K):
                    w = W[k, c]
                    for r in range(R):
                        out[r, c] += A[k, r] * w
        if epilogue == NONE:
            return
        for r in range(R):
            for c in range(cb, C):
                v = out[r, c] + vec[c] if epilogue == ACT else out[r, c]
                out[r, c] = v if (v if epilogue == ACT else mat[r, c]) > 0 else slope * v
        return
    # each element's epilogue as it is stored, its gate read first: mat may be out itself (GATE in
    # place, layers.dense_backward)
    for r in range(R):
        for c in range(cb, C):
            v = out[r, c] if acc else out.dtype.type(0)
            for k in range(K):
                v += A[r, k] * W[k, c]
            if epilogue == ACT:
                v += vec[c]
            if epilogue != NONE and not (v if epilogue == ACT else mat[r, c]) > 0:
                v = slope * v
            out[r, c] = v


_NATIVE = {}    # dtype -> its compiled gemm_native, kept alive: LLVM holds only its address


def link(dtype):
    """The symbol of the native gemm of ``dtype`` (a Numba float type): compiled, or loaded from
    Numba's cache, the first time, and made known to LLVM by that name -- which must happen before
    any machine code that calls it is loaded (``config.KernelCache``)."""
    name = f"fastffnn_gemm_{dtype}"
    if dtype not in _NATIVE:
        p, i64 = types.CPointer(dtype), types.int64
        native = cfunc(gemm_native, types.void(p, p, p, p, p, p, p, i64, i64, i64, i64, i64, i64, types.float64))
        llvm.add_symbol(name, native.address)
        _NATIVE[dtype] = native
    return name


@intrinsic
def _gemm_call(typingctx, out, A, trans_a, W, accumulate, epilogue, vec, mat, first, second, slope):
    # the native gemm of the dtype (``link``) on these arrays: gemm_fused's and gemm_step's
    arrays = (out, A, W, vec, mat, first, second)
    if not all(isinstance(x, types.Array) and x.layout == "C" for x in arrays) or \
            len({x.dtype for x in arrays}) != 1 or out.dtype not in (types.float64, types.float32):
        raise TypingError(f"gemm: C-contiguous float64 or float32 arrays of one dtype, got {arrays}")

    def codegen(context, builder, sig, args):
        dtype = sig.args[0].dtype
        ptr = context.get_value_type(dtype).as_pointer()
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr] * 7 + [_I64] * 6 + [ir.DoubleType()]), link(dtype))

        def data(i):
            return cgutils.create_struct_proxy(sig.args[i])(context, builder, value=args[i]).data

        def shape(i):
            return cgutils.unpack_tuple(builder, cgutils.create_struct_proxy(sig.args[i])(
                context, builder, value=args[i]).shape)

        (R, C), K = shape(0), shape(3)[0]
        flags = [context.cast(builder, args[i], sig.args[i], types.int64) for i in (2, 4, 5)]
        builder.call(fn, [data(0), data(1), data(3), data(6), data(7), data(8), data(9), R, C, K, *flags,
                          context.cast(builder, args[10], sig.args[10], types.float64)])
        return context.get_dummy_value()

    return types.void(out, A, trans_a, W, accumulate, epilogue, vec, mat, first, second, slope), codegen


@jit(inline="always")
def gemm_fused(out, A, trans_a, W, accumulate, epilogue, vec, mat, slope):
    """out (R, C) = op(A) @ W, added to out when accumulate; op(A) = A (R, K), or A.T for A (K, R)
    when trans_a; W (K, C).  All C-contiguous, one dtype.  Then, on each element v of out:

    - epilogue ACT:  v += vec[c]; v = v if v > 0 else slope * v   (bias and relu / leaky / identity)
    - epilogue GATE: v = v if mat[r, c] > 0 else slope * v       (times the relu / leaky derivative)

    A call of the native gemm of the dtype (``link``); vec (C,) and mat (R, C) are read only by
    their epilogue.  Without trans_a, mat may be out itself (an activation that its gradient
    overwrites): each element's gate is read before its result is written."""
    _gemm_call(out, A, trans_a, W, accumulate, epilogue, vec, mat, out, out, slope)


@jit(inline="always")
def steps_in_epilogue(C, itemsize):
    """Whether a weight gradient of C columns (a layer's fan-out) of this itemsize can take the
    optimizer's step in its epilogue (``gemm_step``): every column in a tile, none left to the
    plain-Numba columns past them."""
    return C % (NV * VECTOR_BYTES // itemsize) == 0


@jit(inline="always")
def gemm_step(grad, A, W, accumulate, step):
    """The weight gradient grad (R, C) = A.T @ W for A (K, R), W (K, C), added to grad when
    accumulate, as ``gemm``; then the optimizer's step of ``step`` = (code, weight, first, second,
    coef) where code is ``PLAIN_STEP``, ``MOMENTUM_STEP`` or ``ADAM_STEP`` (``NONE``: the gradient
    alone): on weight (R, C) and its moments first, second (R, C) from that gradient, block by
    block in the epilogue while it is in registers (Adam's, where ``DEFER_ADAM``, from a buffer
    during the next block's reduction), with the coefficients coef
    (``config.STEP_COLUMNS``); grad is then not written.  A step needs ``steps_in_epilogue(C,
    itemsize)`` (ValueError otherwise: the columns past the tiles have no epilogue).  Every
    weight takes the step of ``span._step_range``."""
    code, weight, first, second, coef = step
    if code != NONE and not steps_in_epilogue(grad.shape[1], grad.itemsize):
        raise ValueError("gemm_step: a step needs a gradient of whole vector pairs of columns (steps_in_epilogue)")
    _gemm_call(grad, A, True, W, accumulate, code, coef, weight, first, second, 0.0)


@intrinsic
def transpose_block(typingctx, outT, x, r0, c0):
    """outT[c0:c0+V, r0:r0+V] = x[r0:r0+V, c0:c0+V].T for C-contiguous outT (C, R) and x (R, C),
    V the lanes of a vector of their dtype (4 float64, 8 float32), the block inside both: V
    vector loads, log2 V rounds of V shuffles, each swapping the off-diagonal halves of blocks of
    1, 2, 4... lanes, and V vector stores, inline in the caller (``layers.transpose``)."""
    if not all(isinstance(a, types.Array) and a.layout == "C" and a.ndim == 2 for a in (outT, x)) or \
            outT.dtype != x.dtype or x.dtype not in (types.float64, types.float32):
        raise TypingError(f"transpose_block: C-contiguous 2D float64 or float32 arrays of one dtype, got {outT}, {x}")

    def codegen(context, builder, sig, args):
        fty = context.get_value_type(sig.args[1].dtype)
        vl, _ = _lanes(fty)
        vty, mty = ir.VectorType(fty, vl), ir.VectorType(ir.IntType(32), vl)
        out, inp = (cgutils.create_struct_proxy(sig.args[i])(context, builder, value=args[i]) for i in (0, 1))
        R, C = cgutils.unpack_tuple(builder, inp.shape)
        r0, c0 = args[2], args[3]

        def at(base, row, ld, col):
            return builder.bitcast(builder.gep(base, [builder.add(builder.mul(row, ld), col)]), vty.as_pointer())

        v = [builder.load(at(inp.data, builder.add(r0, ir.Constant(_I64, i)), C, c0), align=1) for i in range(vl)]
        h = 1
        while h < vl:
            for i in (i for i in range(vl) if not i & h):
                low = [j if not j & h else vl + j - h for j in range(vl)]
                high = [j + h if not j & h else vl + j for j in range(vl)]
                v[i], v[i + h] = (builder.shuffle_vector(v[i], v[i + h], ir.Constant(mty, low)),
                                  builder.shuffle_vector(v[i], v[i + h], ir.Constant(mty, high)))
            h *= 2
        for i in range(vl):
            builder.store(v[i], at(out.data, builder.add(c0, ir.Constant(_I64, i)), R, r0), align=1)
        return context.get_dummy_value()

    return types.void(outT, x, types.int64, types.int64), codegen


@jit(inline="always")
def gemm(out, A, trans_a, W, accumulate):
    # gemm_fused without an epilogue
    _gemm_call(out, A, trans_a, W, accumulate, NONE, out.reshape(out.size), out, out, out, 0.0)
