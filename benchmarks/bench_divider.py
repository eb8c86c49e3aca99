"""Whether the FP divider runs beside the multiply-adds: the cause of Adam's cost on mini-batch 32.

Adam's step takes a square root and a division per parameter (``kernels.gemm._emit_step``), which
the kernels hide behind the weight gradient's multiply-adds as far as the divider runs beside them:
in 64-byte vectors a tile's steps are spread through the next tile's reduction
(``gemm.DEFER_ADAM``), where Zen 4 hides most of the divider's time and Zen 2 none.  This measures
that, on loops written in LLVM IR as the kernels' GEMM tile is: each iteration makes
``FMAS`` vector multiply-adds on 8 chains (or none), with the multiplicand in a register,
broadcast from memory (as the tile's A is), a vector loaded from memory, or a lane of one
broadcast in registers; and, or not, one vector square root and division whose operand is
loaded and whose result is stored (as the step's are).  ``extra_info["ns_per_iteration"]`` is
the time of one iteration; where the divider runs beside the multiply-adds, adding the division
costs less than the division alone.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

FMAS = 32
ITERATIONS = 200_000
LANES = 4               # float64 lanes of a 32-byte vector
SLOTS = 64              # vectors the divisions cycle through
# data: the multiplicand and multiplier vectors, the multiply-adds' operands from 2 * LANES (up to
# FMAS + SLOTS of them), the divisions' operands from DIVISIONS, then their results
DIVISIONS = 4 * SLOTS
SIZE = DIVISIONS + 2 * SLOTS * LANES


def _loop(multiplicand: str, divides: bool):
    """A native ``void loop(double* data, double* out, i64 n)`` of the case, and the engine that
    holds its code.  data (SIZE,): laid out as the constants above say; out: the chains' sum."""
    import llvmlite.binding as llvm
    from llvmlite import ir

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    f64, i64, i32 = ir.DoubleType(), ir.IntType(64), ir.IntType(32)
    vty = ir.VectorType(f64, LANES)
    module = ir.Module(name="divider")
    module.triple = llvm.get_process_triple()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [f64.as_pointer(), f64.as_pointer(), i64]), name="loop")
    data, out, n = fn.args
    entry, loop, done = (fn.append_basic_block(name) for name in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    undef = ir.Constant(vty, ir.Undefined)

    def vector(offset):
        return b.bitcast(b.gep(data, [offset]), vty.as_pointer())

    def splat(x):
        return b.shuffle_vector(b.insert_element(undef, x, ir.Constant(i32, 0)), undef,
                                ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))

    x, y = (b.load(vector(ir.Constant(i64, k * LANES)), align=8) for k in (0, 1))
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    chains = [b.phi(vty) for _ in range(8)]
    i.add_incoming(ir.Constant(i64, 0), entry)
    for chain in chains:
        chain.add_incoming(y, entry)
    new = list(chains)
    slot = b.and_(i, ir.Constant(i64, SLOTS - 1))
    lanes = ir.VectorType(i32, LANES)
    for f in range(FMAS if multiplicand else 0):
        if multiplicand == "register":
            a = x
        elif f % 2 == 0:        # one multiplicand per vector pair, as a tile's rows take
            at = b.gep(data, [b.add(ir.Constant(i64, 2 * LANES + f), slot)])
            if multiplicand == "broadcast":
                a = splat(b.load(at, align=8))
            elif multiplicand == "loaded":
                a = b.load(b.bitcast(at, vty.as_pointer()), align=8)
            else:               # "shuffled": a lane of a vector loaded every LANES multiplicands
                if f % (2 * LANES) == 0:
                    loaded = b.load(b.bitcast(at, vty.as_pointer()), align=8)
                a = b.shuffle_vector(loaded, undef, ir.Constant(lanes, [f // 2 % LANES] * LANES))
        new[f % 8] = b.fadd(b.fmul(a, y, flags=("contract",)), new[f % 8], flags=("contract",))
    if divides:
        sqrt = ir.Function(module, ir.FunctionType(vty, [vty]), name=f"llvm.sqrt.v{LANES}f64")
        base = b.add(ir.Constant(i64, DIVISIONS), b.mul(slot, ir.Constant(i64, LANES)))
        v, w = vector(base), vector(b.add(base, ir.Constant(i64, SLOTS * LANES)))
        b.store(b.fsub(b.load(w, align=8), b.fdiv(x, b.call(sqrt, [b.load(v, align=8)]))), w, align=8)
    step = b.add(i, ir.Constant(i64, 1))
    i.add_incoming(step, loop)
    for chain, value in zip(chains, new):
        chain.add_incoming(value, loop)
    b.cbranch(b.icmp_signed("<", step, n), loop, done)
    b.position_at_end(done)
    total = new[0]
    for value in new[1:]:
        total = b.fadd(total, value)
    b.store(total, b.bitcast(out, vty.as_pointer()), align=8)
    b.ret_void()
    parsed = llvm.parse_assembly(str(module))
    machine = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3)
    engine = llvm.create_mcjit_compiler(parsed, machine)
    engine.finalize_object()
    prototype = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    native = prototype(engine.get_function_address("loop"))
    return native, engine


CASES = [(multiplicand, divides) for multiplicand in ("register", "broadcast", "loaded", "shuffled")
         for divides in (False, True)]


@pytest.mark.parametrize("multiplicand, divides", [(None, True)] + CASES,
                         ids=["division alone"] + [f"{m}{', with a division' if d else ''}" for m, d in CASES])
def test_divider_beside_multiply_adds(benchmark, multiplicand, divides):
    native, engine = _loop(multiplicand, divides)     # engine: alive while native runs
    data = np.full(SIZE, 0.999)
    data[LANES:2 * LANES] = 1e-3
    out = np.zeros(LANES)
    native(data.ctypes.data, out.ctypes.data, 1000)
    benchmark.group = "divider"
    benchmark.pedantic(native, (data.ctypes.data, out.ctypes.data, ITERATIONS), rounds=15, warmup_rounds=1)
    benchmark.extra_info.update(multiplicand=multiplicand, divides=divides, fmas=FMAS if multiplicand else 0)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:       # None with --benchmark-disable: nothing was timed
        benchmark.extra_info["ns_per_iteration"] = stats.stats.min / ITERATIONS * 1e9
    assert np.isfinite(out).all()
