"""Every kernel against its slow, obvious reference in ``tests/naive.py``; every backward kernel
against central finite differences; the whole network's gradient and update rule; numerical
stability of the outputs; the numpy and GIL-holding span kernels against the nogil one;
determinism and initialisation.

Layer kernels are checked on shapes drawn by hypothesis (batch 1..8, widths 1..6), each example in
float64 and float32 and for every activation.  Inputs are drawn as float32 values, so the same
numbers feed both dtypes and one float64 finite difference serves both: the float64 kernel must
match it to ``fd`` tolerance, the float32 kernel to float32 tolerance (``naive.TOLERANCES``).
Each test loops over dtypes and activations itself rather than being parametrised over them: the
kernels take microseconds, the per-test fixtures of ``conftest.py`` do not.
"""
import os
import subprocess
import sys
from functools import lru_cache

import llvmlite.binding as llvm
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler

import fastffnn
from fastffnn import HyperParams, vary
from fastffnn.hyperparams import OPTIMIZERS
from fastffnn.kernels import config, elementary, layers, numpy_span, span
from fastffnn.kernels.gemm import (ACT, ADAM_STEP, GATE, MOMENTUM_STEP, NONE, NV, PLAIN_STEP, ROWS_F32,
                                   VECTOR_BYTES, gemm, gemm_fused, gemm_step)
from fastffnn.kernels.reduce import combine_rows
from fastffnn.network import Topology, init_params

import naive

DTYPES = [np.dtype(np.float64), np.dtype(np.float32)]
ACTIVATIONS = list(naive.HIDDEN_ACTIVATIONS)        # names; kernels take naive.ACTIVATION_CODES[name]
ALL_ACTIVATIONS = ACTIVATIONS + ["identity"]        # identity: the output layer's logits
SETTINGS = settings(max_examples=25, deadline=None, database=None)
BATCH = st.integers(1, 8)
WIDTH = st.integers(1, 6)
CLASSES = st.sampled_from([3, 4, 5, 6])               # softmax outputs
SEED = st.integers(0, 2**32 - 1)
PENALTY = st.sampled_from([1.0, 0.5, 2.0, 5.0])
SCALE = st.sampled_from([1.0, 0.125, 0.2])


def draw(rng, shape, scale=1.0):
    """Normal values that are exact in float32 (and so in both dtypes), as float64."""
    return (scale * rng.normal(size=shape)).astype(np.float32).astype(np.float64)


def away_from_zero(rng, shape):
    """Pre-activations at least 0.05 from relu's kink, far more than the difference step."""
    magnitude = 0.05 + 2.0 * np.abs(rng.normal(size=shape))
    return (rng.choice([-1.0, 1.0], size=shape) * magnitude).astype(np.float32).astype(np.float64)


def binary_targets(rng, B):
    return rng.integers(0, 2, size=(B, 1)).astype(np.float64)


def onehot_targets(rng, B, K):
    return np.eye(K)[rng.integers(0, K, size=B)]


def f64(x):
    return np.asarray(x, dtype=np.float64)


def where(**kw):
    """err_msg naming the case that failed, e.g. 'dtype=float32 act=relu'."""
    return " ".join(f"{k}={v}" for k, v in kw.items())


# ============================================================================================
# Calling conventions of the dense kernels, in one place (the rest of the file goes through these)
# ============================================================================================
# The layer kernels take the activation as a compile-time constant, as the span kernels give it;
# config.Specialised finds each compiled literal by its value, as for the span kernels (a plain
# dispatcher types such a function again on every call, a third of a second)
@numba.njit
def _literal_dense_forward(out, inp, weight, bias, act):
    numba.literally(act)
    layers.dense_forward(out, inp, weight, bias, act)


@numba.njit
def _literal_dense_backward(dinp, dweight, dbias, dout, inp, weightT, act):
    # the gradient alone: no optimizer step in the weight gradient's epilogue
    numba.literally(act)
    layers.dense_backward(dinp, dweight, dbias, dout, inp, weightT, act, True,
                          (NONE, dweight, dweight, dweight, dbias))


literal_dense_forward = config.Specialised(_literal_dense_forward, 4)
literal_dense_backward = config.Specialised(_literal_dense_backward, 6)


def kernel_dense_forward(inp, weight, bias, act="identity"):
    """act(inp @ weight + bias) (B, O) from the kernel, in the dtype of its inputs."""
    out = np.full((inp.shape[0], weight.shape[1]), np.nan, inp.dtype)
    literal_dense_forward(out, inp, weight, bias, naive.ACTIVATION_CODES[act])
    return out


def kernel_dense_backward(dout, inp, weight, dweight, dbias, act="identity", need_dinp=True):
    """dinp (B, I) from the kernel: (dout @ weight^T) * act'(z), where inp = act(z) is the previous
    layer's activation; None when skipped.  dweight (I, O) and dbias (O,) accumulate in place."""
    B, I = inp.shape
    dinp = np.full((B if need_dinp else 0, I), np.nan, inp.dtype)
    literal_dense_backward(dinp, dweight, dbias, dout, inp, np.ascontiguousarray(weight.T),
                          naive.ACTIVATION_CODES[act])
    return dinp if need_dinp else None


def test_layer_kernels_refuse_an_activation_known_only_at_run_time():
    # compiled for one activation at a time, they say so when called with a plain integer
    x = np.ones((2, 2))
    with pytest.raises(numba.core.errors.TypingError, match="compile-time constant"):
        layers.dense_forward(x.copy(), x, x, np.ones(2), config.RELU)


COMPILES_ONE_OUTPUT_KIND = """
import numpy as np
import fastffnn as ff
from fastffnn.kernels import layers
rng = np.random.default_rng(0)
X = rng.normal(size=(40, 3))
result = ff.train(X, (X[:, 0] > 0).astype(int), hidden=(4,), instances=2, epochs=1, backend="serial")
result.ensemble.predict_proba(X)     # compiles the binary prediction kernel too
print(len(layers.sigmoid_xent.signatures), len(layers.softmax_xent.signatures))
"""


def test_a_binary_run_never_compiles_the_softmax(tmp_path):
    # the span and prediction kernels are compiled for one output or K (layers._binary, a
    # literal): a fresh process with an empty Numba cache trains and predicts two classes, and
    # the softmax loss is never compiled -- nor typed, or it would have a signature (prediction's
    # softmax is inlined and leaves none to count; that it is chosen the same way is the overload)
    import os
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", COMPILES_ONE_OUTPUT_KIND], capture_output=True, text=True,
                         check=True, timeout=300, env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert out.stdout.split() == ["1", "0"], out.stdout


def test_a_helper_compiled_for_kernels_only_refuses_a_call_from_python():
    """``jit(python=False)`` leaves out the Python wrapper (a lighter cold start); a call from Python
    then raises, naming the helper, where the missing wrapper's null entry point would crash."""
    assert isinstance(layers.column_sums, config.KernelOnlyDispatcher)
    with pytest.raises(TypeError, match=r"layers\.column_sums is compiled for other kernels only"):
        layers.column_sums(np.zeros(3), np.ones((4, 3)))


def test_output_kernels_refuse_an_output_known_only_at_run_time():
    z = np.zeros((2, 1))
    with pytest.raises(numba.core.errors.TypingError, match="compile-time constant"):
        numba.njit(lambda p, z, b: layers.output_proba(p, z, 1.0, b))(z.copy(), z, True)


def test_the_span_kernel_refuses_a_binary_flag_that_is_not_the_networks():
    prob = Problem("relu", 3)
    kernel = lambda *args: span.train_span(*args[:-1], True)        # noqa: E731 -- K = 3 is no sigmoid
    with pytest.raises(ValueError, match="one output"):
        prob.run(1, np.float64, kernel)


def kernel_activation_forward(z, act, bias=None):
    """act(z + bias) from the kernel (bias 0 when not given)."""
    a = z.copy()
    layers.activation_forward(a, np.zeros(z.shape[1], z.dtype) if bias is None else bias,
                              naive.ACTIVATION_CODES[act])
    return a


def kernel_activation_backward(d, a, act):
    grad = d.copy()
    layers.activation_backward(grad, a, naive.ACTIVATION_CODES[act])
    return grad


# ============================================================================================
# Layer kernels against naive references
# ============================================================================================
@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
@pytest.mark.parametrize("B, I", [(37, 21), (128, 32), (1, 1)])
def test_output_backward_is_dense_backward_of_one_output(act, B, I):
    # the binary output layer's one pass against the two products of width 1 it replaces: the
    # same bits after relu; after leaky relu, the slope may be applied one rounding apart
    rng = np.random.default_rng(B * I)
    code = naive.ACTIVATION_CODES[act]
    for dtype in DTYPES:
        inp, dz, w, dw0 = (rng.normal(size=s).astype(dtype) for s in ((B, I), (B, 1), (I, 1), (I, 1)))
        want = [np.zeros((B, I), dtype), dw0.copy(), np.ones(1, dtype)]
        got = [inp.copy(), dw0.copy(), np.ones(1, dtype)]      # the deltas overwrite the activations
        literal_dense_backward(*want, dz, inp, np.ascontiguousarray(w.T), code)
        layers.output_backward(*got, dz, w, code)
        for name, a, b in zip(("dinp", "dweight", "dbias"), got, want):
            msg = where(dtype=dtype, array=name)
            if act == "relu" or name != "dinp":
                np.testing.assert_array_equal(a, b, err_msg=msg)
            else:
                np.testing.assert_allclose(a, b, rtol=4 * np.finfo(dtype).eps, atol=0, err_msg=msg)


@pytest.mark.parametrize("B, I", [(37, 21), (128, 32), (3, 5), (1, 1)])
def test_output_forward_is_dense_forward_of_one_output_wherever_a_row_falls(B, I):
    # the binary logits in one pass against the gemm's product of width 1 (the reduction order
    # may differ by a rounding); each row alone gives the bits it gives in the batch
    rng = np.random.default_rng(B + I)
    for dtype in DTYPES:
        inp, w, bias = rng.normal(size=(B, I)).astype(dtype), rng.normal(size=(I, 1)).astype(dtype), np.ones(1, dtype)
        z = np.full((B, 1), np.nan, dtype)
        layers.output_forward(z, inp, w, bias)
        naive.assert_close(z, kernel_dense_forward(inp, w, bias), dtype, msg=where(dtype=dtype))
        for r in range(B):
            one = np.full((1, 1), np.nan, dtype)
            layers.output_forward(one, inp[r:r + 1].copy(), w, bias)
            np.testing.assert_array_equal(one[0], z[r], err_msg=where(dtype=dtype, row=r))


@SETTINGS
@given(R=st.integers(1, 40), C=WIDTH, seed=SEED)
def test_transpose(R, C, seed):
    x = draw(np.random.default_rng(seed), (R, C))
    for dtype in DTYPES:
        outT = np.full((C, R), np.nan, dtype)
        layers.transpose(outT, x.astype(dtype))
        np.testing.assert_array_equal(outT, x.T, err_msg=where(dtype=dtype))


@pytest.mark.parametrize("R, C", [(256, 128), (32, 32), (70, 100), (17, 300), (300, 17), (9, 17)])
def test_transpose_in_blocks(R, C):
    # in vector blocks, with the rows and columns past the last block element by element
    x = draw(np.random.default_rng(R * C), (R, C))
    for dtype in DTYPES:
        outT = np.full((C, R), np.nan, dtype)
        layers.transpose(outT, x.astype(dtype))
        np.testing.assert_array_equal(outT, x.T, err_msg=where(dtype=dtype))


@settings(max_examples=60, deadline=None, database=None)
@given(R=st.integers(1, 20), C=st.integers(1, 40), K=st.integers(1, 40), seed=SEED)
def test_gemm(R, C, K, seed):
    # out (R, C) = op(A) @ W, overwriting out or added to it; shapes past the register block
    # (float64: 4 rows for A @ W of a W this small, 6 for A.T @ W; float32: 4 rows; 8 or 16
    # columns) exercise full blocks, edge rows and edge columns
    rng = np.random.default_rng(seed)
    A, W, out0 = draw(rng, (R, K)), draw(rng, (K, C)), draw(rng, (R, C))
    want = naive.matmul(A, W)
    for dtype in DTYPES:
        for trans_a in (False, True):
            a = np.ascontiguousarray(A.T if trans_a else A, dtype=dtype)
            for accumulate in (False, True):
                out = out0.astype(dtype)
                gemm(out, a, trans_a, W.astype(dtype), accumulate)
                naive.assert_close(out, want + (out0 if accumulate else 0.0), dtype,
                                   msg=where(dtype=dtype, trans_a=trans_a, accumulate=accumulate))


def test_gemm_rows_do_not_depend_on_their_place():
    # a row gives the same bits in a full register block and in the edge rows after the last
    # block: the batch position of a sample never changes its numbers
    rng = np.random.default_rng(0)
    for dtype in DTYPES:
        A, W = rng.normal(size=(13, 37)).astype(dtype), rng.normal(size=(37, 32)).astype(dtype)
        out = np.empty((13, 32), dtype)
        gemm(out, A, False, W, False)
        for r in range(13):
            row = np.empty((1, 32), dtype)
            gemm(row, A[r:r + 1].copy(), False, W, False)
            np.testing.assert_array_equal(row[0], out[r], err_msg=where(dtype=dtype, row=r))



@pytest.mark.parametrize("R, K, C", [(100, 128, 256), (50, 256, 64), (64, 257, 160), (7, 100, 256)])
def test_packed_panels_give_the_bits_of_the_gemm_in_place(R, K, C):
    # large products copy W's columns (and, for A.T, A's block) into panels on the stack; a row
    # computed alone reads both in place.  Packed or not, transposed or not, every element is
    # the same sum in the same order: the same bits.  K = 257 is past the panel's length.
    rng = np.random.default_rng(R + K + C)
    for dtype in DTYPES:
        A, W, out0 = (rng.normal(size=s).astype(dtype) for s in ((R, K), (K, C), (R, C)))
        for accumulate in (False, True):
            rows = out0.copy()
            for r in range(R):
                gemm(rows[r:r + 1], A[r:r + 1].copy(), False, W, accumulate)
            msg = where(dtype=dtype, accumulate=accumulate)
            naive.assert_close(rows, naive.matmul(A, W) + (out0 if accumulate else 0.0), dtype, msg=msg)
            for trans_a, a in ((False, A), (True, np.ascontiguousarray(A.T))):
                out = out0.copy()
                gemm(out, a, trans_a, W, accumulate)
                np.testing.assert_array_equal(out, rows, err_msg=where(dtype=dtype, trans_a=trans_a))

@numba.njit
def fused(out, A, W, act, vec, mat, slope):
    # gemm_fused as the dense kernels call it, with a constant epilogue
    if act:
        gemm_fused(out, A, False, W, False, ACT, vec, mat, slope)
    else:
        gemm_fused(out, A, False, W, False, GATE, vec, mat, slope)


@settings(max_examples=40, deadline=None, database=None)
@given(R=st.integers(1, 20), C=st.integers(1, 40), K=st.integers(1, 12), seed=SEED)
def test_gemm_epilogues(R, C, K, seed):
    # the epilogues applied in registers (full blocks, pairs, single rows) and in plain Numba (the
    # last columns) against numpy: ACT adds the bias and keeps v if v > 0 else slope * v; GATE keeps
    # v where the gate is positive and scales it by slope elsewhere; a NaN stays a NaN in both
    rng = np.random.default_rng(seed)
    A, W, bias, gate = draw(rng, (R, K)), draw(rng, (K, C)), draw(rng, C), draw(rng, (R, C))
    product = naive.matmul(A, W)
    A[0, 0] = np.nan                        # row 0 of the product becomes NaN
    for dtype in DTYPES:
        for slope in (0.0, config.LEAKY_SLOPE, 1.0):
            msg = where(dtype=dtype, slope=slope)
            a, w = A.astype(dtype), W.astype(dtype)
            out = np.full((R, C), np.inf, dtype)
            fused(out, a, w, True, bias.astype(dtype), out, slope)
            v = product + bias
            naive.assert_close(out[1:], np.where(v > 0, v, slope * v)[1:], dtype, msg=msg)
            assert np.isnan(out[0]).all(), msg
            out = np.full((R, C), np.inf, dtype)
            fused(out, a, w, False, bias.astype(dtype), gate.astype(dtype), slope)
            naive.assert_close(out[1:], np.where(gate > 0, product, slope * product)[1:], dtype, msg=msg)
            assert np.isnan(out[0]).all(), msg
            # in place: the gate is the output, each gate read before its element is written
            in_place = gate.astype(dtype)
            fused(in_place, a, w, False, bias.astype(dtype), in_place, slope)
            np.testing.assert_array_equal(in_place, out, err_msg=msg)


@numba.njit
def stepped(grad, A, W, accumulate, code, weight, first, second, coef):
    # gemm_step as dense_backward calls it, the step's code known at run time
    gemm_step(grad, A, W, accumulate, (code, weight, first, second, coef))


# the optimizers of the step epilogues: (hyperparameters, the code _coefficients gives them)
STEP_CASES = [(HyperParams(lr=2**-3, momentum=0.0), PLAIN_STEP),
              (HyperParams(lr=2**-3, l2=2**-4, momentum=0.75), MOMENTUM_STEP),
              (HyperParams(lr=2**-5, l2=2**-4, optimizer="adam", beta1=0.875, beta2=1 - 2**-10, eps=2**-20),
               ADAM_STEP)]


PAIR_F32 = NV * VECTOR_BYTES // 4    # the columns of a float32 tile, whole tiles of float64 too


@settings(max_examples=30, deadline=None, database=None)
@given(R=st.integers(1, 20), C=st.sampled_from([PAIR_F32, 2 * PAIR_F32, 16 * PAIR_F32]), K=st.integers(1, 12),
       accumulate=st.booleans(), seed=SEED)
def test_gemm_step_epilogues(R, C, K, accumulate, seed):
    # the optimizer's step in the weight gradient's epilogue (full blocks, pairs, single rows;
    # C = 16 tiles in packed panels) against naive.sgd_step / naive.adam_step on the gradient
    # A.T @ W (+ what grad held, when accumulating), L2 included; grad itself is not written
    rng = np.random.default_rng(seed)
    A, W, held = draw(rng, (K, R)), draw(rng, (K, C)), draw(rng, (R, C))
    weight, first, second = draw(rng, (R, C)), draw(rng, (R, C), 0.05), np.abs(draw(rng, (R, C), 0.01))
    gradient = naive.matmul(A.T, W) + (held if accumulate else 0.0)
    sizes, t = (R, C), 3        # one layer whose bias the test leaves out; Adam's third step

    def flat(x):
        return np.concatenate([x.ravel(), np.zeros(C)])

    for hp, code in STEP_CASES:
        if hp.optimizer == "adam":
            want, want_first, want_second = naive.adam_step(flat(weight), flat(first), flat(second), t, flat(gradient),
                                                            sizes, hp.lr, hp.l2, hp.beta1, hp.beta2, hp.eps)
        else:
            (want, want_first), want_second = naive.sgd_step(flat(weight), flat(first), flat(gradient), sizes, hp.lr,
                                                             hp.l2, hp.momentum), flat(second)
        for dtype in DTYPES:
            msg = where(dtype=dtype, optimizer=hp.optimizer, momentum=hp.momentum)
            coef, got_code = span._coefficients(np.zeros(len(config.STEP_COLUMNS), dtype), hp.row(1).astype(dtype), t)
            assert got_code == code, msg
            grad, w, m1, m2 = (x.astype(dtype) for x in (held, weight, first, second))
            stepped(grad, A.astype(dtype), W.astype(dtype), accumulate, code, w, m1, m2, coef)
            for got, expected in ((w, want), (m1, want_first), (m2, want_second)):
                naive.assert_close(got, expected[:R * C].reshape(R, C), dtype, msg=msg)
            np.testing.assert_array_equal(grad, held.astype(dtype), err_msg=msg)


def test_gemm_step_refuses_columns_past_the_last_vector_pair():
    # the plain-Numba columns past the tiles have no step epilogue: a step there is refused, not
    # left half taken
    R, C, K = 4, 12, 3
    grad, weight = np.zeros((R, C)), np.ones((R, C))
    coef = np.zeros(len(config.STEP_COLUMNS))
    with pytest.raises(ValueError, match="whole vector pairs"):
        stepped(grad, np.ones((K, R)), np.ones((K, C)), False, PLAIN_STEP, weight, weight.copy(), weight.copy(), coef)
    np.testing.assert_array_equal(weight, 1.0)


def test_gemm_refuses_strided_arrays():
    out, A = np.zeros((4, 8)), np.ones((4, 8))
    with pytest.raises(Exception, match="C-contiguous"):
        gemm(out, np.asfortranarray(A), False, np.ones((8, 8)), False)


@SETTINGS
@given(B=BATCH, I=WIDTH, O=WIDTH, seed=SEED)
def test_dense_forward(B, I, O, seed):
    rng = np.random.default_rng(seed)
    inp, weight, bias = draw(rng, (B, I)), draw(rng, (I, O)), draw(rng, O)
    for act in ALL_ACTIVATIONS:
        want = naive.activation_forward(naive.dense_forward(inp, weight, bias), act)
        for dtype in DTYPES:
            out = kernel_dense_forward(inp.astype(dtype), weight.astype(dtype), bias.astype(dtype), act)
            assert out.dtype == dtype
            naive.assert_close(out, want, dtype, msg=where(dtype=dtype, act=act))


@SETTINGS
@given(B=BATCH, I=WIDTH, O=WIDTH, seed=SEED)
def test_dense_backward(B, I, O, seed):
    rng = np.random.default_rng(seed)
    z = draw(rng, (B, I), scale=2.0)                     # the previous layer's pre-activation
    weight, dout = draw(rng, (I, O)), draw(rng, (B, O))
    dweight0, dbias0 = draw(rng, (I, O)), draw(rng, O)
    for act in ALL_ACTIVATIONS:
        for dtype in DTYPES:
            msg = where(dtype=dtype, act=act)
            inp = naive.activation_forward(z, act).astype(dtype)
            dinp_raw, want_dweight, want_dbias = naive.dense_backward(dout, inp, weight)
            w, d = weight.astype(dtype), dout.astype(dtype)

            # weight and bias gradients accumulate into what is there; the input gradient is overwritten
            dweight, dbias = dweight0.astype(dtype), dbias0.astype(dtype)
            dinp = kernel_dense_backward(d, inp, w, dweight, dbias, act)
            naive.assert_close(dinp, naive.activation_backward(dinp_raw, z, act), dtype, msg=msg)
            naive.assert_close(dweight, dweight0 + want_dweight, dtype, msg=msg)
            naive.assert_close(dbias, dbias0 + want_dbias, dtype, msg=msg)

            # the first layer skips its input gradient and still gets the same weight gradients
            dweight_skip, dbias_skip = dweight0.astype(dtype), dbias0.astype(dtype)
            assert kernel_dense_backward(d, inp, w, dweight_skip, dbias_skip, act, need_dinp=False) is None
            naive.assert_close(dweight_skip, dweight, dtype, msg=msg)
            naive.assert_close(dbias_skip, dbias, dtype, msg=msg)


@pytest.mark.parametrize("act", ALL_ACTIVATIONS)
@SETTINGS
@given(B=BATCH, I=WIDTH, O=WIDTH, seed=SEED)
def test_dense_backward_finite_differences(act, B, I, O, seed):
    # the objective sum(dout * (act(z) @ weight + bias)), differentiated by the kernel w.r.t. z
    # (fused with the activation), weight and bias; differences of the float64 forward kernel
    rng = np.random.default_rng(seed)
    z = away_from_zero(rng, (B, I))
    weight, bias, dout = draw(rng, (I, O)), draw(rng, O), draw(rng, (B, O))

    def objective(z, w, b):
        return float((dout * kernel_dense_forward(naive.activation_forward(z, act), w, b)).sum())

    fd_z = naive.fd_gradient(lambda x: objective(x, weight, bias), z)
    fd_weight = naive.fd_gradient(lambda w: objective(z, w, bias), weight)
    fd_bias = naive.fd_gradient(lambda b: objective(z, weight, b), bias)
    for dtype in DTYPES:
        msg = where(dtype=dtype)
        inp = naive.activation_forward(z, act).astype(dtype)
        dweight, dbias = np.zeros((I, O), dtype), np.zeros(O, dtype)
        dinp = kernel_dense_backward(dout.astype(dtype), inp, weight.astype(dtype), dweight, dbias, act)
        naive.assert_close(dinp, fd_z, dtype, "fd", msg)
        naive.assert_close(dweight, fd_weight, dtype, "fd", msg)
        naive.assert_close(dbias, fd_bias, dtype, "fd", msg)


@SETTINGS
@given(B=BATCH, O=WIDTH, seed=SEED)
def test_activation_forward(B, O, seed):
    # act(z + bias): the dense layer's bias is added in the activation pass
    rng = np.random.default_rng(seed)
    z, bias = draw(rng, (B, O), scale=3.0), draw(rng, O)
    for act in ALL_ACTIVATIONS:
        want = naive.activation_forward(z + bias, act)
        for dtype in DTYPES:
            naive.assert_close(kernel_activation_forward(z.astype(dtype), act, bias.astype(dtype)), want,
                               dtype, msg=where(dtype=dtype, act=act))


@SETTINGS
@given(B=BATCH, O=WIDTH, seed=SEED)
def test_activation_backward(B, O, seed):
    rng = np.random.default_rng(seed)
    z, d = draw(rng, (B, O), scale=3.0), draw(rng, (B, O))
    for act in ALL_ACTIVATIONS:
        want = naive.activation_backward(d, z, act)
        for dtype in DTYPES:
            a = kernel_activation_forward(z.astype(dtype), act)
            naive.assert_close(kernel_activation_backward(d.astype(dtype), a, act), want, dtype,
                               msg=where(dtype=dtype, act=act))


@SETTINGS
@given(B=BATCH, O=WIDTH, seed=SEED)
def test_activation_backward_finite_differences(B, O, seed):
    rng = np.random.default_rng(seed)
    z, d = away_from_zero(rng, (B, O)), draw(rng, (B, O))
    for act in ALL_ACTIVATIONS:
        fd = naive.fd_gradient(lambda x: float((d * kernel_activation_forward(x, act)).sum()), z)
        for dtype in DTYPES:
            a = kernel_activation_forward(z.astype(dtype), act)
            naive.assert_close(kernel_activation_backward(d.astype(dtype), a, act), fd, dtype, "fd",
                               where(dtype=dtype, act=act))


def test_activation_derivative_at_the_kink_is_the_left_one():
    # relu'(0) = 0 and leaky_relu'(0) = slope, as naive.activation_backward says
    for act, want in [("relu", 0.0), ("leaky_relu", config.LEAKY_SLOPE)]:
        for dtype in DTYPES:
            a = kernel_activation_forward(np.zeros((1, 2), dtype), act)
            grad = kernel_activation_backward(np.ones((1, 2), dtype), a, act)
            np.testing.assert_array_equal(grad, np.full((1, 2), want, dtype))
            naive.assert_close(grad, naive.activation_backward(np.ones((1, 2)), np.zeros((1, 2)), act), dtype)


# ============================================================================================
# Output kernels
# ============================================================================================
def _output_case(rng, B, K, scale=3.0):
    z = draw(rng, (B, K), scale=scale)
    return z, (binary_targets(rng, B) if K == 1 else onehot_targets(rng, B, K))


def kernel_xent(z, t, penalty, scale=1.0):
    """(loss terms (B,), scale * their gradient w.r.t. z (B, K)) from the fused loss kernel."""
    terms, dz = np.full(z.shape[0], np.nan, dtype=z.dtype), np.full(z.shape, np.nan, dtype=z.dtype)
    kernel = layers.sigmoid_xent if z.shape[1] == 1 else layers.softmax_xent
    # the span kernels pass penalty as a scalar of the run's dtype (read from the hyper row)
    kernel(terms, dz, z, t.astype(z.dtype), z.dtype.type(penalty), scale)
    return terms, dz


def kernel_xent_forward(z, t, penalty):
    return kernel_xent(z, t, penalty)[0]


def kernel_xent_backward(z, t, penalty, scale):
    return kernel_xent(z, t, penalty, scale)[1]


@numba.njit
def _literal_output_proba(proba, z, penalty, binary):
    numba.literally(binary)
    layers.output_proba(proba, z, penalty, binary)


literal_output_proba = config.Specialised(_literal_output_proba, 3)


def kernel_output_proba(z, penalty):
    proba = np.full(z.shape, np.nan, dtype=z.dtype)
    literal_output_proba(proba, z, z.dtype.type(penalty), z.shape[1] == 1)
    return proba


def naive_xent(K):
    """(forward, backward) reference for K outputs."""
    if K == 1:
        return naive.sigmoid_xent_forward, naive.sigmoid_xent_backward
    return naive.softmax_xent_forward, naive.softmax_xent_backward


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
@SETTINGS
@given(B=BATCH, K=CLASSES, penalty=PENALTY, scale=SCALE, seed=SEED)
def test_xent_forward_and_backward(output, B, K, penalty, scale, seed):
    K = 1 if output == "sigmoid" else K
    z, t = _output_case(np.random.default_rng(seed), B, K)
    forward, backward = naive_xent(K)
    for dtype in DTYPES:
        msg = where(dtype=dtype)
        terms = kernel_xent_forward(z.astype(dtype), t, penalty)
        assert terms.dtype == dtype
        naive.assert_close(terms, forward(z, t, penalty), dtype, msg=msg)
        naive.assert_close(kernel_xent_backward(z.astype(dtype), t, penalty, scale),
                           backward(z, t, penalty, scale), dtype, msg=msg)


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
@SETTINGS
@given(B=BATCH, K=CLASSES, penalty=PENALTY, scale=SCALE, seed=SEED)
def test_xent_backward_finite_differences(output, B, K, penalty, scale, seed):
    # dz = d/dz of scale * sum of the per-sample losses, with the forward kernel in float64
    K = 1 if output == "sigmoid" else K
    z, t = _output_case(np.random.default_rng(seed), B, K, scale=2.0)
    fd = naive.fd_gradient(lambda x: scale * float(kernel_xent_forward(x, t, penalty).sum()), z)
    for dtype in DTYPES:
        naive.assert_close(kernel_xent_backward(z.astype(dtype), t, penalty, scale), fd, dtype, "fd",
                           where(dtype=dtype))


@SETTINGS
@given(B=BATCH, K=st.sampled_from([1, 3, 4, 5, 6]), penalty=PENALTY, seed=SEED)
def test_output_proba(B, K, penalty, seed):
    z, _ = _output_case(np.random.default_rng(seed), B, K)
    want = naive.output_proba(z, penalty)
    for dtype in DTYPES:
        proba = kernel_output_proba(z.astype(dtype), penalty)
        naive.assert_close(proba, want, dtype, msg=where(dtype=dtype))
        if K > 1:
            naive.assert_close(proba.sum(axis=1), np.ones(B), dtype)


def test_naive_sigmoid_xent_is_the_report_loss_for_moderate_logits():
    # the exact (log-add-exp) reference is the same function as the report's formula where the
    # latter can be evaluated; |penalty * z| <= 15 keeps 1 - sigmoid well above rounding
    z = np.linspace(-5.0, 5.0, 21)[:, None]
    for t in (0.0, 1.0):
        for penalty in (1.0, 3.0):
            target = np.full_like(z, t)
            naive.assert_close(naive.sigmoid_xent_forward(z, target, penalty),
                               naive.sigmoid_xent_report(z, target, penalty), np.float64)


def _ulps(actual, x, exact):
    # |actual - f(x)| in ulps of f(x), f(x) computed in extended precision (64-bit mantissa)
    want = exact(np.asarray(x, dtype=np.longdouble))
    return np.abs(np.asarray(actual, dtype=np.longdouble) - want) / np.spacing(want.astype(np.float64))


def test_elementary_exp_is_within_one_ulp_and_flushes_below_the_normal_range():
    rng = np.random.default_rng(0)
    x = -np.concatenate([rng.exponential(5.0, 20_000), rng.uniform(0.0, -elementary.EXP_MIN, 20_000),
                         [0.0, 5e-324, 1e-300, 0.5 * np.log(2.0), 1.0, 708.0, -elementary.EXP_MIN]])
    got = np.array([elementary.exp_nonpositive(v) for v in x])
    assert _ulps(got, x, np.exp).max() <= 1.0
    below = [np.nextafter(elementary.EXP_MIN, -np.inf), -745.0, -1e4, -np.inf]
    assert [elementary.exp_nonpositive(v) for v in below] == [0.0] * 4
    assert elementary.exp_nonpositive(-0.0) == 1.0 and np.isnan(elementary.exp_nonpositive(np.nan))


def test_elementary_log1p_is_within_one_ulp_on_the_unit_interval():
    rng = np.random.default_rng(1)
    e = np.concatenate([rng.uniform(0.0, 1.0, 20_000), np.exp(-rng.exponential(20.0, 20_000)),
                        [0.0, 5e-324, 1e-300, np.nextafter(0.5, 0.0), 0.5, np.nextafter(1.0, 0.0), 1.0]])
    got = np.array([elementary.log1p_unit(v) for v in e])
    assert _ulps(got[e > 0], e[e > 0], np.log1p).max() <= 1.0
    assert got[e == 0].tolist() == [0.0] and np.isnan(elementary.log1p_unit(np.nan))


def test_sigmoid_xent_of_a_nan_logit_is_nan():
    # the drivers stop a diverged instance on its NaN loss; its gradient must not look finite either
    z, t = np.array([[np.nan], [1.0]]), np.array([[1.0], [0.0]])
    for dtype in DTYPES:
        terms, dz = kernel_xent(z.astype(dtype), t, 1.0)
        assert np.isnan(terms[0]) and np.isnan(dz[0, 0]) and np.isfinite([terms[1], dz[1, 0]]).all()


# ============================================================================================
# Stability: logits of +-1e4, with penalty 1 and 5
# ============================================================================================
HUGE = 1e4


def test_sigmoid_output_finite_for_huge_logits():
    z = np.array([[HUGE], [-HUGE], [HUGE], [-HUGE], [0.0]])
    t = np.array([[0.0], [1.0], [1.0], [0.0], [1.0]])
    for penalty in (1.0, 5.0):
        for dtype in DTYPES:
            msg = where(dtype=dtype, penalty=penalty)
            terms = kernel_xent_forward(z.astype(dtype), t, penalty)
            dz = kernel_xent_backward(z.astype(dtype), t, penalty, 0.2)
            proba = kernel_output_proba(z.astype(dtype), penalty)
            for x in (terms, dz, proba):
                assert np.isfinite(x).all(), (msg, x)
            # exact: softplus(u) - t u = |u| when confidently wrong, 0 when right, log 2 at u = 0
            naive.assert_close(terms, [penalty * HUGE, penalty * HUGE, 0.0, 0.0, np.log(2.0)], dtype, msg=msg)
            naive.assert_close(terms, naive.sigmoid_xent_forward(z, t, penalty), dtype, msg=msg)
            naive.assert_close(dz, 0.2 * penalty * np.array([[1.0], [-1.0], [0.0], [0.0], [-0.5]]), dtype, msg=msg)
            naive.assert_close(proba, [[1.0], [0.0], [1.0], [0.0], [0.5]], dtype, msg=msg)


def test_softmax_output_finite_for_huge_logits():
    z = np.array([[HUGE, -HUGE, 0.0], [-HUGE, -HUGE, HUGE], [HUGE, HUGE, -HUGE], [-HUGE, 0.0, HUGE]])
    t = np.eye(3)[[1, 2, 2, 0]]
    for penalty in (1.0, 5.0):
        u = penalty * HUGE
        for dtype in DTYPES:
            msg = where(dtype=dtype, penalty=penalty)
            terms = kernel_xent_forward(z.astype(dtype), t, penalty)
            dz = kernel_xent_backward(z.astype(dtype), t, penalty, 0.25)
            proba = kernel_output_proba(z.astype(dtype), penalty)
            for x in (terms, dz, proba):
                assert np.isfinite(x).all(), (msg, x)
            naive.assert_close(terms, [2 * u, 0.0, 2 * u + np.log(2.0), 2 * u], dtype, msg=msg)
            naive.assert_close(terms, naive.softmax_xent_forward(z, t, penalty), dtype, msg=msg)
            naive.assert_close(dz, naive.softmax_xent_backward(z, t, penalty, 0.25), dtype, msg=msg)
            naive.assert_close(proba, [[1, 0, 0], [0, 0, 1], [0.5, 0.5, 0], [0, 0, 1]], dtype, msg=msg)


def test_report_formulation_breaks_where_the_kernel_does_not():
    # the 2020 report: yhat = sigmoid(z), then -(y log(yhat) + (1 - y) log(1 - yhat))
    z = np.array([[HUGE], [-HUGE], [HUGE], [-HUGE]])
    t = np.array([[0.0], [1.0], [1.0], [0.0]])
    for penalty in (1.0, 5.0):
        report = naive.sigmoid_xent_report(z, t, penalty)
        # Inf where the prediction is wrong (log 0), NaN where it is right (0 * log 0)
        assert np.isinf(report[:2]).all() and np.isnan(report[2:]).all(), report
        terms = kernel_xent_forward(z, t, penalty)
        assert np.isfinite(terms).all()
        exact = np.logaddexp(0.0, penalty * z[:, 0]) - t[:, 0] * penalty * z[:, 0]
        np.testing.assert_allclose(terms, exact, rtol=1e-15, atol=0)
        np.testing.assert_allclose(terms, [penalty * HUGE, penalty * HUGE, 0.0, 0.0], rtol=1e-15, atol=0)


# ============================================================================================
# Reduction and prediction
# ============================================================================================
@SETTINGS
@given(N=BATCH, C=WIDTH, seed=SEED)
def test_combine_rows(N, C, seed):
    rng = np.random.default_rng(seed)
    big, weights = draw(rng, (N, 2 * C + 1)), draw(rng, N)
    want = naive.combine_rows(big[:, 1::2], weights)
    for dtype in DTYPES:
        rows = big.astype(dtype)[:, 1::2]                # strided, as a column block of params is
        out = np.full(C, np.nan, dtype)
        combine_rows(out, rows, weights.astype(dtype))
        naive.assert_close(out, want, dtype, msg=where(dtype=dtype))
        contiguous = np.full(C, np.nan, dtype)
        combine_rows(contiguous, np.ascontiguousarray(rows), weights.astype(dtype))
        np.testing.assert_array_equal(contiguous, out)


@SETTINGS
@given(n=BATCH, F=WIDTH, H=WIDTH, K=st.sampled_from([1, 3, 4]), penalty=PENALTY, seed=SEED)
def test_predict_proba(n, F, H, K, penalty, seed):
    rng = np.random.default_rng(seed)
    sizes = (F, H, H, K)
    X, params = draw(rng, (n, F)), draw(rng, naive.n_params(sizes))
    for act in ACTIVATIONS:
        want = naive.predict_proba(params, X, sizes, act, penalty)
        for dtype in DTYPES:
            proba = np.full((n, K), np.nan, dtype)
            span.predict_proba(proba, X.astype(dtype), params.astype(dtype), np.array(sizes, dtype=np.int64),
                               naive.ACTIVATION_CODES[act], dtype.type(penalty), K == 1)
            naive.assert_close(proba, want, dtype, msg=where(dtype=dtype, act=act))


# ============================================================================================
# Batch order: splitmix64 and Fisher-Yates
# ============================================================================================
def test_splitmix64_reference_values():
    # the first outputs of splitmix64 from state 0 (Vigna's reference implementation)
    want = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    state, got = 0, []
    for _ in want:
        state, out = naive.splitmix64(state)
        got.append(out)
    assert got == want
    for next_u64 in (span._next_u64, numpy_span._next_u64):
        rng = np.zeros(1, dtype=np.uint64)
        assert [int(next_u64(rng)) for _ in want] == want
        assert int(rng[0]) == state


@SETTINGS
@given(n=st.integers(1, 40), state=st.integers(0, 2**64 - 1))
def test_shuffle(n, state):
    rng = np.array([state], dtype=np.uint64)
    order = np.arange(n, dtype=np.int64)
    span._shuffle(order, rng)
    want_order, want_state = naive.shuffle(range(n), state)
    assert order.tolist() == want_order
    assert int(rng[0]) == want_state


# ============================================================================================
# The whole network: spans of training against finite differences of the naive loss
# ============================================================================================
class Problem:
    """Arguments of one span kernel call for one instance, on small random data.  Data and
    parameters are exact in float32; with hyperparameters that are too (0.25, 0.0625, ...), one
    float64 reference serves both dtypes.  The optimizer state starts as a run's would after
    ``steps`` steps: SGD's velocity drawn when there is momentum; Adam's moments zero when fresh,
    else drawn."""

    def __init__(self, act, K, *, n=7, lr=0.25, l2=0.0, momentum=0.0, batch=None, penalty=1.5, seed=0,
                 optimizer="sgd", beta1=0.875, beta2=1 - 2**-10, eps=2**-20, steps=0, hidden=(4, 3),
                 backprop=False):
        rng = np.random.default_rng(seed)
        self.sizes = (3, *hidden, K)
        self.act, self.code = act, naive.ACTIVATION_CODES[act]
        P = naive.n_params(self.sizes)
        self.X = draw(rng, (n, self.sizes[0]))
        self.T = binary_targets(rng, n) if K == 1 else onehot_targets(rng, n, K)
        self.params = draw(rng, P, scale=0.7)
        first = draw(rng, P, scale=0.05) if (momentum if optimizer == "sgd" else steps) else np.zeros(P)
        second = np.abs(draw(rng, P, scale=0.01)) if steps else np.zeros(P)
        self.moments, self.steps = np.stack([first, second]), steps
        self.rng = np.array([rng.integers(0, 2**63)], dtype=np.uint64)
        self.order = np.arange(n, dtype=np.int64)
        self.hyper = np.zeros(config.N_HYPER)
        self.hyper[config.LR], self.hyper[config.L2], self.hyper[config.MOMENTUM] = lr, l2, momentum
        self.hyper[config.BATCH_SIZE] = n if batch is None else batch
        self.hyper[config.PENALTY] = penalty
        self.hyper[config.OPTIMIZER] = OPTIMIZERS[optimizer]
        self.hyper[config.BETA1], self.hyper[config.BETA2], self.hyper[config.EPS] = beta1, beta2, eps
        self.lr, self.l2, self.momentum, self.penalty = lr, l2, momentum, penalty
        self.optimizer, self.beta1, self.beta2, self.eps = optimizer, beta1, beta2, eps
        self.batch = int(min(n, self.hyper[config.BATCH_SIZE]))
        self.backprop = backprop        # naive_epochs' gradients by naive.backprop_gradient, not finite differences

    def run(self, epochs, dtype, kernel=span.train_span, cancel=None):
        """(params, moments, losses, rng, order, steps) after ``epochs`` epochs -- or fewer, if
        ``cancel`` (1,) is set meanwhile; ``self.done`` is then the epochs completed.  The problem
        is unchanged."""
        params, moments = self.params.astype(dtype), self.moments.astype(dtype)
        steps, rng, order = np.array([self.steps]), self.rng.copy(), self.order.copy()
        losses = np.full(epochs, np.nan, dtype)
        work = np.zeros(span.workspace_size(self.sizes, self.batch, dtype), dtype)
        grad = np.zeros(params.shape[0], dtype)
        cancel = np.zeros(1, np.int64) if cancel is None else cancel
        done = np.zeros(1, np.int64)
        kernel(params, moments, steps, rng, losses, self.X.astype(dtype), self.T.astype(dtype),
               np.array(self.sizes, dtype=np.int64), self.code, self.hyper.astype(dtype), work, grad, order,
               cancel, done, self.sizes[-1] == 1)
        self.done = int(done[0])
        assert self.done == epochs or cancel[0]
        return params, moments, losses, rng, order, int(steps[0])

    def samples(self, rows=None):
        """(X, T) of the given rows, or of all."""
        return (self.X, self.T) if rows is None else (self.X[rows], self.T[rows])

    def data_loss(self, params, rows=None):
        X, T = self.samples(rows)
        return naive.loss(params, X, T, self.sizes, self.act, self.penalty)

    def full_loss(self, params):
        return naive.loss(params, self.X, self.T, self.sizes, self.act, self.penalty, self.l2)

    def fd_gradient(self, params, rows=None):
        return naive.fd_gradient(lambda p: self.data_loss(p, rows), params)

    def gradient(self, params, rows=None):
        if not self.backprop:
            return self.fd_gradient(params, rows)
        return naive.backprop_gradient(params, *self.samples(rows), self.sizes, self.act, self.penalty)


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_the_naive_backpropagation_is_the_finite_differences(act, K):
    # the reference of the long batches (Problem's backprop) against the finite differences
    prob = Problem(act, K, seed=K + 40, hidden=(4, 3))
    rows = [4, 0, 6]
    for r in (None, rows):
        np.testing.assert_allclose(naive.backprop_gradient(prob.params, *prob.samples(r), prob.sizes, prob.act,
                                                           prob.penalty),
                                   prob.fd_gradient(prob.params, r), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("hidden", [(4, 3), (), (4, 1)])
@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_one_full_batch_step_is_gradient_descent(act, K, hidden):
    # momentum 0, l2 0: params' = params - lr * (finite-difference gradient of the naive loss);
    # also with no hidden layer (the output layer is the first) and with a hidden layer of width 1
    # before the output (its backward is dense_backward's, whatever the output)
    prob = Problem(act, K, seed=K * 10 + naive.ACTIVATION_CODES[act], hidden=hidden)
    step = prob.lr * prob.fd_gradient(prob.params)
    assert np.abs(step).max() > 1e-2          # a step large enough for the check to mean something
    for dtype in DTYPES:
        params, moments, losses, _, _, _ = prob.run(1, dtype)
        assert params.dtype == dtype and losses.dtype == dtype
        naive.assert_close(losses, [prob.data_loss(prob.params)], dtype, msg=where(dtype=dtype))
        naive.assert_close(params, prob.params - step, dtype, "fd", where(dtype=dtype))
        np.testing.assert_array_equal(moments, 0.0)        # momentum 0 leaves the velocity alone


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_full_batch_steps_with_l2_and_momentum(act):
    # v = mu v - lr (g + l2 W) (weights only); p += v; the loss adds 0.5 l2 |W|^2 (weights only)
    epochs = 3
    for K in (1, 3):
        prob = Problem(act, K, l2=0.0625, momentum=0.75, seed=K * 10 + naive.ACTIVATION_CODES[act] + 100)
        p, v, want_losses = prob.params, prob.moments[0], []
        for _ in range(epochs):
            want_losses.append(prob.full_loss(p))
            p, v = naive.sgd_step(p, v, prob.fd_gradient(p), prob.sizes, prob.lr, prob.l2, prob.momentum)
        for dtype in DTYPES:
            msg = where(dtype=dtype, K=K)
            params, moments, losses, _, _, _ = prob.run(epochs, dtype)
            naive.assert_close(losses, want_losses, dtype, "fd", msg)
            naive.assert_close(params, p, dtype, "fd", msg)
            naive.assert_close(moments[0], v, dtype, "fd", msg)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_mini_batch_epochs_follow_the_naive_batch_order(act):
    # n = 7, batch 3: batches of 3, 3, 1 in the order of the in-kernel splitmix64 shuffle
    epochs = 2
    for K in (1, 3):
        prob = Problem(act, K, batch=3, l2=0.015625, momentum=0.5, seed=K + 200)
        n, B = prob.X.shape[0], prob.batch
        p, v, state, perm = prob.params, prob.moments[0], int(prob.rng[0]), list(prob.order)
        want_losses = []
        for _ in range(epochs):
            weights, _ = naive.unpack(p, prob.sizes)
            total = 0.5 * prob.l2 * sum((W ** 2).sum() for W in weights)
            perm, state = naive.shuffle(perm, state)
            for start in range(0, n, B):
                rows = perm[start:start + B]
                total += prob.data_loss(p, rows) * len(rows) / n
                p, v = naive.sgd_step(p, v, prob.fd_gradient(p, rows), prob.sizes, prob.lr, prob.l2, prob.momentum)
            want_losses.append(total)
        for dtype in DTYPES:
            msg = where(dtype=dtype, K=K)
            params, moments, losses, rng, order, _ = prob.run(epochs, dtype)
            assert order.tolist() == perm, msg
            assert int(rng[0]) == state, msg
            naive.assert_close(losses, want_losses, dtype, "fd", msg)
            naive.assert_close(params, p, dtype, "fd", msg)
            naive.assert_close(moments[0], v, dtype, "fd", msg)


# ============================================================================================
# Adam: the paper's formulas (naive.adam_step), scikit-learn's AdamOptimizer, torch.optim.Adam
# ============================================================================================
ADAM = dict(optimizer="adam", beta1=0.875, beta2=1 - 2**-10, eps=2**-20)     # exact in float32


def naive_epochs(prob, epochs):
    """What the span kernel should do to ``prob``, by the naive references: (params, moments,
    losses, order, generator state, steps) after ``epochs`` epochs of ``naive.adam_step`` or
    ``naive.sgd_step`` on ``Problem.gradient``'s gradients, each epoch's batches in the naive shuffle's
    order (a full batch is not shuffled)."""
    n, B = prob.X.shape[0], prob.batch
    p, (m, v), t = prob.params, prob.moments, prob.steps
    perm, state, losses = list(prob.order), int(prob.rng[0]), []
    for _ in range(epochs):
        weights, _ = naive.unpack(p, prob.sizes)
        total = 0.5 * prob.l2 * sum((W ** 2).sum() for W in weights)
        if B < n:
            perm, state = naive.shuffle(perm, state)
        for start in range(0, n, B):
            rows = perm[start:start + B]
            total += prob.data_loss(p, rows) * len(rows) / n
            g, t = prob.gradient(p, rows), t + 1
            if prob.optimizer == "adam":
                p, m, v = naive.adam_step(p, m, v, t, g, prob.sizes, prob.lr, prob.l2, prob.beta1, prob.beta2,
                                          prob.eps)
            else:
                p, m = naive.sgd_step(p, m, g, prob.sizes, prob.lr, prob.l2, prob.momentum)
        losses.append(total)
    return p, np.stack([m, v]), losses, perm, state, t


def assert_epochs_follow_the_naive_ones(prob, epochs):
    """The span kernel's ``epochs`` epochs of ``prob`` in each dtype are ``naive_epochs``': the
    steps counted, the batch order and generator, the losses, parameters and moments.  Returns
    the steps."""
    p, moments, want_losses, perm, state, t = naive_epochs(prob, epochs)
    for dtype in DTYPES:
        msg = where(dtype=dtype, K=prob.sizes[-1])
        params, got, losses, rng, order, steps = prob.run(epochs, dtype)
        assert steps == t and order.tolist() == perm and int(rng[0]) == state, msg
        naive.assert_close(losses, want_losses, dtype, "fd", msg)
        naive.assert_close(params, p, dtype, "fd", msg)
        naive.assert_close(got, moments, dtype, "fd", msg)
    return t


@pytest.mark.parametrize("batch", [None, 3])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_adam_steps_follow_the_naive_adam(act, batch):
    # Adam 5 steps into a run (non-zero moments, t from 6: the bias corrections count on), L2
    # coupled into the gradient; the full batch, and batches of 3, 3, 1 in the shuffle's order
    epochs = 3
    for K in (1, 3):
        prob = Problem(act, K, lr=2**-5, l2=2**-6, batch=batch, steps=5, seed=K + 300, **ADAM)
        assert assert_epochs_follow_the_naive_ones(prob, epochs) == 5 + epochs * -(-7 // prob.batch)


@pytest.mark.parametrize("batch", [None, 120])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_steps_in_the_weight_gradients_epilogue_follow_the_naive_steps(act, optimizer, batch):
    # layers 16 wide, a whole number of vector pairs in float64 (and in float32 with 32-byte
    # vectors; with 64-byte ones its steps are span._update's, and test_gemm_step_epilogues takes
    # its epilogue alone -- 32 wide, the finite differences take 16 times as long): their weights
    # take the step in the last chunk's weight-gradient epilogue (gemm.gemm_step), the rest in
    # span._update; 16 outputs make the output layer one of them.  1100 samples: the full batch is
    # three chunks or more in either dtype, each gradient accumulating before the last takes the
    # step; batches of 120 (nine, then 20) one chunk
    assert span.steps_in_epilogue(16, 8) and span.steps_in_epilogue(16, 4) == (PAIR_F32 == 16)
    epochs = 2
    options = ADAM if optimizer == "adam" else dict(momentum=0.5)
    for K in (1, 16):
        prob = Problem(act, K, n=1100, lr=2**-5, l2=2**-6, batch=batch, steps=5, seed=K + 500, hidden=(16, 16),
                       backprop=True, **options)
        rows = [span.chunk_rows.py_func(np.array(prob.sizes), itemsize) for itemsize in (8, 4)]
        assert 1100 > 2 * max(rows) and 120 <= min(rows)
        assert_epochs_follow_the_naive_ones(prob, epochs)


def test_adam_update_matches_naive_adam_and_scikit_learn():
    """The kernels' update alone (``span._update``, on a network too narrow for any weight to take
    the step in its gradient's epilogue) on given gradients: six Adam steps with L2 on the weights,
    against the paper's formulas and scikit-learn's AdamOptimizer.  scikit-learn folds
    the bias corrections into the learning rate, lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), and adds its
    epsilon to the uncorrected sqrt(v): p -= lr_t m / (sqrt(v) + epsilon).  That is our step (and
    PyTorch's) with eps = epsilon / sqrt(1 - b2^t), so each step t runs with that eps here and the
    three agree to rounding; with one eps throughout, scikit-learn's steps differ from the paper's."""
    from sklearn.neural_network._stochastic_optimizers import AdamOptimizer

    sizes = (3, 4, 2)
    P = naive.n_params(sizes)
    rng = np.random.default_rng(0)
    params0, grads = draw(rng, P), [draw(rng, P) for _ in range(6)]
    hp = HyperParams(lr=2**-5, l2=2**-4, optimizer="adam", beta1=0.875, beta2=1 - 2**-10, eps=2**-10)

    def eps_of_step(t):
        return hp.eps / np.sqrt(1 - hp.beta2 ** t)

    def naive_adam(eps):
        p, m, v = params0, np.zeros(P), np.zeros(P)
        for t, g in enumerate(grads, 1):
            p, m, v = naive.adam_step(p, m, v, t, g, sizes, hp.lr, hp.l2, hp.beta1, hp.beta2, eps(t))
        return p, m, v

    flat = params0.copy()           # one flat array as scikit-learn's list of coefs and intercepts
    adam = AdamOptimizer([flat], hp.lr, hp.beta1, hp.beta2, hp.eps)
    for g in grads:
        adam.update_params([flat], [g + hp.l2 * naive.weight_mask(sizes) * flat])    # as MLPClassifier's alpha
    sklearn = (flat, adam.ms[0], adam.vs[0])
    want = naive_adam(eps_of_step)
    for dtype in DTYPES:
        params, moments, steps = params0.astype(dtype), np.zeros((2, P), dtype), np.zeros(1, np.int64)
        hyper = hp.row(1).astype(dtype)
        work = np.zeros(len(config.STEP_COLUMNS), dtype)      # the step's coefficients
        for t, g in enumerate(grads, 1):
            hyper[config.EPS] = eps_of_step(t)
            coef, code = span._coefficients(work, hyper, steps[0] + 1)
            span._update(params, *moments, steps, g.astype(dtype), np.array(sizes), coef, code)
        assert steps[0] == len(grads)
        for got, naive_value, sklearn_value in zip((params, *moments), want, sklearn):
            naive.assert_close(got, naive_value, dtype, msg=where(dtype=dtype))
            naive.assert_close(got, sklearn_value, dtype, msg=where(dtype=dtype))
    assert not np.allclose(naive_adam(lambda t: hp.eps)[0], sklearn[0], **naive.tol(np.float32)), \
        "one eps throughout: scikit-learn's arrangement is not the paper's"


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_adam_span_matches_torch(act, K):
    """Three full-batch epochs of the span kernel against the same network in PyTorch, trained by
    ``torch.optim.Adam`` with ``weight_decay`` on the weights only (L2 coupled into the gradient, as
    ours): the same parameters and moments."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    activations = {"relu": torch.relu, "tanh": torch.tanh}
    epochs = 3
    prob = Problem(act, K, lr=2**-5, l2=2**-6, seed=K + 400, **ADAM)      # fresh: zero moments, t from 1
    for dtype in DTYPES:
        tdtype = getattr(torch, dtype.name)
        weights, biases = ([torch.tensor(a, dtype=tdtype, requires_grad=True) for a in arrays]
                           for arrays in naive.unpack(prob.params, prob.sizes))
        adam = torch.optim.Adam([{"params": weights, "weight_decay": prob.l2}, {"params": biases, "weight_decay": 0.0}],
                                lr=prob.lr, betas=(prob.beta1, prob.beta2), eps=prob.eps, foreach=False)
        X, T = torch.tensor(prob.X, dtype=tdtype), torch.tensor(prob.T, dtype=tdtype)
        for _ in range(epochs):
            adam.zero_grad()
            a = X
            for l, (W, b) in enumerate(zip(weights, biases)):
                a = a @ W + b if l == len(weights) - 1 else activations[act](a @ W + b)
            u = prob.penalty * a
            (F.binary_cross_entropy_with_logits(u, T) if K == 1 else F.cross_entropy(u, T)).backward()
            adam.step()

        def flat(of):
            return np.concatenate([of(x).detach().numpy().ravel() for pair in zip(weights, biases) for x in pair])

        params, moments, _, _, _, steps = prob.run(epochs, dtype)
        msg = where(dtype=dtype)
        assert steps == epochs
        naive.assert_close(params, flat(lambda x: x), dtype, msg=msg)
        naive.assert_close(moments[0], flat(lambda x: adam.state[x]["exp_avg"]), dtype, msg=msg)
        naive.assert_close(moments[1], flat(lambda x: adam.state[x]["exp_avg_sq"]), dtype, msg=msg)


# ============================================================================================
# kernel="numpy" and kernel="numba-gil" against the nogil numba span kernel
# ============================================================================================
@lru_cache(maxsize=None)
def dataset(n_classes, n=60, features=4):
    X, y = make_classification(n_samples=n, n_features=features, n_informative=3, n_redundant=0,
                               n_classes=n_classes, n_clusters_per_class=1, random_state=n_classes)
    return StandardScaler().fit_transform(X), y


@lru_cache(maxsize=None)
def trained(kernel, act, n_classes, batch_size, dtype="float64", epochs=50, seed=7):
    X, y = dataset(n_classes)
    hps = vary(lr=[0.05, 0.1], l2=[0.0, 1e-3], momentum=[0.9, 0.0], penalty=[1.0, 2.0], batch_size=batch_size)
    return fastffnn.train(X, y, hidden=(5, 4), activation=act, hyperparams=hps, epochs=epochs,
                          backend="serial", kernel=kernel, dtype=dtype, seed=seed, sync="none")


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_numpy_and_gil_kernels_match_numba(act, n_classes):
    # 50 epochs, two instances with different lr, l2, momentum and penalty; full batch, and
    # batches of 16 in the order of the in-kernel shuffle (so the orders must agree exactly)
    for batch_size in (None, 16):
        msg = where(batch_size=batch_size)
        ref = trained("numba", act, n_classes, batch_size)
        losses = ref.history.losses
        assert np.isfinite(losses).all() and (losses[:, -1] < losses[:, 0]).all(), msg   # it trained
        res = trained("numpy", act, n_classes, batch_size)
        naive.assert_close(res.history.losses, losses, np.float64, "span", msg)
        naive.assert_close(res.ensemble.params, ref.ensemble.params, np.float64, "span", msg)
        gil = trained("numba-gil", act, n_classes, batch_size)
        np.testing.assert_array_equal(gil.history.losses, losses, err_msg=msg)
        np.testing.assert_array_equal(gil.ensemble.params, ref.ensemble.params, err_msg=msg)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_span_matches_numba_span(dtype, optimizer):
    # direct kernel calls: same batch order and generator state exactly, same numbers to rounding
    # (a stable learning rate: an oscillating run amplifies rounding differences ~5x per epoch; Adam,
    # whose steps are about lr whatever the gradient, amplifies those of small gradients too)
    epochs = 20
    for K in (1, 3):
        for batch in (None, 4):
            msg = where(K=K, batch=batch)
            prob = Problem("tanh", K, n=13, lr=0.05 if optimizer == "sgd" else 0.01, l2=1e-3, momentum=0.9,
                           batch=batch, seed=K, optimizer=optimizer)
            ref = prob.run(epochs, dtype, span.train_span)
            res = prob.run(epochs, dtype, numpy_span.train_span)
            for a, b in zip(res[:3], ref[:3]):                   # params, moments, losses
                assert a.dtype == b.dtype == dtype
                naive.assert_close(a, b, dtype, "span", msg)
            for a, b in zip(res[3:], ref[3:]):                   # rng state, batch order, steps
                np.testing.assert_array_equal(a, b, err_msg=msg)
            if batch is not None:
                assert not np.array_equal(ref[4], prob.order), msg    # the order was shuffled
            if dtype == np.float64:
                for a, b in zip(prob.run(epochs, dtype, span.train_span_gil), ref):
                    np.testing.assert_array_equal(a, b, err_msg=msg)


# ============================================================================================
# Determinism and initialisation
# ============================================================================================
def test_same_seed_is_bit_identical():
    X, y = dataset(3)
    kwargs = dict(hidden=(5, 4), activation="relu", instances=3, epochs=10, backend="serial",
                  hyperparams=HyperParams(batch_size=16))
    a = fastffnn.train(X, y, seed=11, **kwargs)
    b = fastffnn.train(X, y, seed=11, **kwargs)
    c = fastffnn.train(X, y, seed=12, **kwargs)
    np.testing.assert_array_equal(a.ensemble.params, b.ensemble.params)
    np.testing.assert_array_equal(a.history.losses, b.history.losses)
    assert not np.array_equal(a.ensemble.params, c.ensemble.params)
    assert not np.array_equal(a.history.losses, c.history.losses)


def test_instances_start_from_different_weights():
    topology = Topology((4, 5, 3), "tanh")
    params, rng = init_params(topology, np.random.SeedSequence(0).spawn(3), np.float64)
    again, rng_again = init_params(topology, np.random.SeedSequence(0).spawn(3), np.float64)
    np.testing.assert_array_equal(params, again)
    np.testing.assert_array_equal(rng, rng_again)
    for j in range(3):
        for k in range(j):
            assert not np.array_equal(params[j], params[k])
    assert len(set(rng[:, 0].tolist())) == 3              # and shuffle their batches differently
    for k in range(3):
        weights, biases = topology.views(params[k])
        for b in biases:
            np.testing.assert_array_equal(b, 0.0)
        for W in weights:
            assert np.all(W != 0.0)


def test_initial_weight_scale():
    # He, N(0, 2 / fan_in), for the ReLU family; Glorot, N(0, 2 / (fan_in + fan_out)), otherwise.
    # 120 000 draws put the sample std within 1% of the truth; He and Glorot differ by 32% here.
    fan_in, fan_out = 400, 300
    for act in ACTIVATIONS:
        topology = Topology((fan_in, fan_out, 1), act)
        params, _ = init_params(topology, [np.random.SeedSequence(5)], np.float64)
        W = topology.views(params[0])[0][0]
        he = act in ("relu", "leaky_relu")
        want = np.sqrt(2.0 / fan_in) if he else np.sqrt(2.0 / (fan_in + fan_out))
        assert abs(W.std() / want - 1.0) < 0.02, (act, W.std(), want)
        assert abs(W.mean()) < 0.05 * want, act


def test_float32_run_is_close_to_float64():
    for n_classes in (2, 3):
        msg = where(n_classes=n_classes)
        r64 = trained("numba", "tanh", n_classes, None, "float64", epochs=30)
        r32 = trained("numba", "tanh", n_classes, None, "float32", epochs=30)
        assert r32.ensemble.params.dtype == np.float32
        assert r32.history.losses.dtype == np.float32
        assert np.isfinite(r32.history.losses).all()
        assert (r64.history.losses[:, -1] < r64.history.losses[:, 0]).all(), msg   # it trained
        naive.assert_close(r32.history.losses, r64.history.losses, np.float32, "run", msg)
        naive.assert_close(r32.ensemble.params, r64.ensemble.params, np.float32, "run", msg)
        X, _ = dataset(n_classes)
        proba = r32.ensemble.predict_proba(X)
        assert proba.dtype == np.float32 and np.isfinite(proba).all()
        naive.assert_close(proba, r64.ensemble.predict_proba(X), np.float32, "run", msg)


# Trains seeded runs whose every parameter takes its step in a gemm epilogue at one vector width and
# in span's loops at the other (hidden widths 40 and 24: whole tile pairs of 8 columns, not of 16),
# or in the epilogue at both; SGD with momentum and L2, Adam with L2; both dtypes.  Prints the digest
# of each run's parameters and losses, and the vector width it ran with.
WIDTH_SCRIPT = """
import hashlib
import numpy as np
import fastffnn as ff
from fastffnn.kernels.gemm import ROWS_F32, VECTOR_BYTES
X, _, y, _ = ff.datasets.breast_cancer(test_size=0.1, seed=0)
digests = []
for dtype in ("float64", "float32"):
    for hp in (ff.HyperParams(lr=0.05, batch_size=100, momentum=0.9, l2=0.01),
               ff.HyperParams(lr=0.01, optimizer="adam", l2=0.01, batch_size=64)):
        for hidden in ((40, 24), (64, 32)):
            r = ff.train(X, y, hidden=hidden, hyperparams=hp, epochs=3, dtype=dtype, instances=2, seed=1,
                         backend="serial")
            digests.append(hashlib.sha256(r.ensemble.params.tobytes() + r.history.losses.tobytes()).hexdigest())
print(VECTOR_BYTES, ROWS_F32, *digests)
"""


def test_results_do_not_depend_on_the_vector_width_or_the_block_rows():
    # the gemm's tiles in 32- and 64-byte vectors (FASTFFNN_VECTOR_BYTES; LLVM splits a vector wider
    # than the CPU's) and in blocks of 4 or 6 rows (by the CPU Numba compiles for: a generic AVX2
    # one, or Haswell's long multiply-add), the optimizer's step in an epilogue or in span's loops,
    # Adam's in 64-byte vectors deferred to the next tile's reduction (gemm.DEFER_ADAM): the same bits
    settings = [({"FASTFFNN_VECTOR_BYTES": "32", "NUMBA_CPU_NAME": "x86-64-v3"}, ["32", "4"]),
                ({"FASTFFNN_VECTOR_BYTES": "32", "NUMBA_CPU_NAME": "haswell"}, ["32", "6"]),
                ({"FASTFFNN_VECTOR_BYTES": "64"}, ["64", str(ROWS_F32)])]
    # the three at once: each compiles its own kernels, most of its time
    procs = [subprocess.Popen([sys.executable, "-c", WIDTH_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, **env}) for env, _ in settings]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    runs = [out.split() for out, _ in outputs]
    assert [run[:2] for run in runs] == [shape for _, shape in settings]
    assert runs[0][2:] == runs[1][2:] == runs[2][2:]


FEATURES_SCRIPT = """
from numba.core.registry import cpu_target
from fastffnn.kernels.gemm import VECTOR_BYTES
print(VECTOR_BYTES, "+avx512f" in cpu_target.target_context.codegen()._tm_features.split(","))
"""


@pytest.mark.parametrize("env, fixed", [({}, None), ({"NUMBA_CPU_NAME": llvm.get_host_cpu_name()}, None),
                                        ({"NUMBA_CPU_NAME": "generic"}, "32"),
                                        ({"NUMBA_CPU_NAME": "skylake-avx512",
                                          "NUMBA_CPU_FEATURES": "+avx2,+fma,+avx512f"}, "64")],
                         ids=["host", "host-by-name", "generic", "avx512-features"])
def test_the_vector_width_follows_the_features_numba_compiles_with(env, fixed):
    # 64-byte tiles exactly where Numba's JIT targets AVX-512: its NUMBA_CPU_FEATURES where set (empty
    # for NUMBA_CPU_NAME=generic), else the host's, whether or not NUMBA_CPU_NAME names a CPU
    base = {k: v for k, v in os.environ.items() if k not in ("FASTFFNN_VECTOR_BYTES", "NUMBA_CPU_NAME",
                                                             "NUMBA_CPU_FEATURES")}
    width, avx512 = subprocess.run([sys.executable, "-c", FEATURES_SCRIPT], capture_output=True, text=True,
                                   timeout=120, env={**base, **env}, check=True).stdout.split()
    assert width == ("64" if avx512 == "True" else "32")
    assert fixed in (None, width)


def test_a_bad_vector_width_is_refused_by_name():
    proc = subprocess.run([sys.executable, "-c", "import fastffnn"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FASTFFNN_VECTOR_BYTES": "48"})
    assert proc.returncode != 0
    assert "FASTFFNN_VECTOR_BYTES='48': must be 32 or 64" in proc.stderr
