"""Per-layer kernels: one forward/backward pair per pass, activations fused into them.

Dimensions: B = samples in the batch, I = fan_in, O = fan_out, K = outputs.
Argument order follows llm.c: outputs first, then inputs and weights.  Backward kernels
*accumulate* into weight/bias gradients -- or overwrite them, ``accumulate`` False (a step's first
chunk) -- and *overwrite* the input gradient.

All three products of a layer -- the forward pass, the weight gradient and the input gradient --
are one ``gemm`` (``kernels/gemm.py``) with no transposed copy of an activation or a delta: the
weight gradient reads the layer input as ``A.T`` through strides, and only the small weight
matrix is transposed (``transpose``, once per step) for the input gradient.
"""
import math

import numpy as np
from numba import types
from numba.core.errors import TypingError
from numba.extending import overload

from .config import CONTRACT, IDENTITY, LEAKY_RELU, LEAKY_SLOPE, RELU, SIGMOID, TANH, jit
from .elementary import exp_nonpositive, log1p_unit
from .gemm import ACT, GATE, VECTOR_BYTES, gemm, gemm_fused, gemm_step, transpose_block


@jit(inline="always")
def _sigmoid(x):
    # stable for any x: exp of a non-positive number only
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


FUSED_FORWARD = (RELU, LEAKY_RELU, IDENTITY)    # activations applied in the forward product's epilogue
FUSED_BACKWARD = (RELU, LEAKY_RELU)             # derivatives applied in the input gradient's epilogue


def _fused(act, codes) -> bool:
    """Whether the activation ``act`` -- the Numba type of a layer kernel's argument, a literal:
    the span kernels take theirs with ``numba.literally`` -- is one of ``codes``.  The layer
    kernels' overloads choose their implementation by it while they are typed, so a run compiles
    its activation's branch only: the others, and the functions they call, are never compiled."""
    if not isinstance(act, types.IntegerLiteral):
        raise TypingError(f"the activation of a layer kernel must be a compile-time constant (a literal), got {act}; "
                          f"call it from a kernel that takes act with numba.literally(act)")
    return act.literal_value in codes


def _binary(binary) -> bool:
    """The value of ``binary`` -- whether the network has one output, a sigmoid, rather than a
    softmax over K -- the Numba type of a literal as ``_fused`` takes the activation: the output
    layer's kernels choose by it while they are typed, so a binary run never compiles the
    softmax, nor a multiclass run the one-output kernels.  Those overloads, but the constant
    ``one_pass_output``, are not inlined: each is typed once, not again at every call site of the
    functions that inline it (inlined, they cost a cold start 0.5 s more than they saved)."""
    if not isinstance(binary, types.BooleanLiteral):
        raise TypingError(f"binary, whether the output is one sigmoid, must be a compile-time constant (a literal), "
                          f"got {binary}; call it from a kernel that takes binary with numba.literally(binary)")
    return binary.literal_value


def _product_forward(out, inp, weight, bias, act):
    """dense_forward's product and activation (overloaded below)."""


@overload(_product_forward, prefer_literal=True, inline="always")
def _product_forward_overload(out, inp, weight, bias, act):
    if _fused(act, FUSED_FORWARD):
        slope = _slope.py_func(act.literal_value)     # a constant of the implementation

        def impl(out, inp, weight, bias, act):
            # bias and activation in the product's epilogue, while the block is in registers
            gemm_fused(out, inp, False, weight, False, ACT, bias, out, slope)
    else:
        def impl(out, inp, weight, bias, act):
            gemm(out, inp, False, weight, False)
            activation_forward(out, bias, act)
    return impl


def _product_input_gradient(dinp, dout, weightT, dbias, inp, act):
    """dense_backward's input gradient and activation derivative (overloaded below)."""


@overload(_product_input_gradient, prefer_literal=True, inline="always")
def _product_input_gradient_overload(dinp, dout, weightT, dbias, inp, act):
    if _fused(act, FUSED_BACKWARD):
        slope = _slope.py_func(act.literal_value)     # a constant of the implementation

        def impl(dinp, dout, weightT, dbias, inp, act):
            gemm_fused(dinp, dout, False, weightT, False, GATE, dbias, inp, slope)
    else:
        def impl(dinp, dout, weightT, dbias, inp, act):
            gemm(dinp, dout, False, weightT, False)
            activation_backward(dinp, inp, act)
    return impl


@jit(inline="always")
def dense_forward(out, inp, weight, bias, act):
    # out (B, O) overwritten with act(inp @ weight + bias); act = IDENTITY for logits, a literal
    # (_fused); inp (B, I); weight (I, O)
    _product_forward(out, inp, weight, bias, act)


@jit(inline="always")
def output_forward(z, inp, weight, bias):
    # dense_forward for a layer of one output, the binary logits: z (B, 1) overwritten with
    # inp (B, I) @ weight (I, 1) + bias (1,), a dot product per row vectorised along I -- the
    # gemm's own loop for one column, without the call, its tiles' bookkeeping and a second pass
    # for the bias.  Every row takes the same arithmetic, wherever it falls in the batch.  (Four
    # rows a pass were no faster, and took 0.4 s more to compile.)
    B, I = inp.shape
    w = weight.reshape(I)
    for b in range(B):
        s = inp.dtype.type(0)
        for j in range(I):
            s += inp[b, j] * w[j]
        z[b, 0] = s + bias[0]


def output_layer_forward(z, inp, weight, bias, binary):
    """The output layer's logits z (B, K) (overloaded below): ``output_forward`` for one output,
    else ``dense_forward`` without an activation."""


@overload(output_layer_forward, prefer_literal=True)
def _output_layer_forward_overload(z, inp, weight, bias, binary):
    if _binary(binary):
        return lambda z, inp, weight, bias, binary: output_forward(z, inp, weight, bias)
    return lambda z, inp, weight, bias, binary: dense_forward(z, inp, weight, bias, IDENTITY)


def _one_pass(act, binary) -> bool:
    # one output after relu or leaky relu: the output layer's backward is output_backward (literals)
    return _binary(binary) and _fused(act, FUSED_BACKWARD)


def one_pass_output(act, binary):
    """Whether the output layer's backward is ``output_backward`` (overloaded below, a constant):
    one output after relu or leaky relu (``act``, the last hidden layer's activation)."""


@overload(one_pass_output, prefer_literal=True, inline="always")
def _one_pass_output_overload(act, binary):
    one_pass = _one_pass(act, binary)
    return lambda act, binary: one_pass


def output_layer_backward(dinp, dweight, dbias, dz, inp, weightT, act, binary, accumulate, step):
    """The output layer's backward (overloaded below): ``output_backward`` where
    ``one_pass_output`` (one output, so its step is ``NONE``; it reads the weight, step[1]; dinp
    is inp there, whose activations its deltas overwrite, ``deltas_in_place``: it works on dinp,
    whose type is writable where inp's may be read-only, as the input X), else
    ``dense_backward`` (which reads ``weightT``); accumulate and step as dense_backward's."""


@overload(output_layer_backward, prefer_literal=True)
def _output_layer_backward_overload(dinp, dweight, dbias, dz, inp, weightT, act, binary, accumulate, step):
    if _one_pass(act, binary):
        def impl(dinp, dweight, dbias, dz, inp, weightT, act, binary, accumulate, step):
            if not accumulate:
                clear(dweight.reshape(dweight.size))
                clear(dbias)
            output_backward(dinp, dweight, dbias, dz, step[1], act)     # dinp is inp (a writable type)
    else:
        def impl(dinp, dweight, dbias, dz, inp, weightT, act, binary, accumulate, step):
            dense_backward(dinp, dweight, dbias, dz, inp, weightT, act, accumulate, step)
    return impl


def deltas_in_place(act):
    """Whether a hidden layer's deltas overwrite its activations (overloaded below, a constant):
    after relu or leaky relu (``act``), whose derivative the input gradient's epilogue reads from
    the activation just before it writes the delta there, so a chunk's backward touches half the
    memory; tanh's and sigmoid's derivatives are applied after the product, from the activation,
    so their deltas keep a place of their own."""


@overload(deltas_in_place, prefer_literal=True, inline="always")
def _deltas_in_place_overload(act):
    fused = _fused(act, FUSED_BACKWARD)
    return lambda act: fused


@jit(inline="always")
def dense_backward(dinp, dweight, dbias, dout, inp, weightT, act, accumulate, step):
    # dweight (I, O) += inp^T @ dout, or the optimizer's step from that gradient: step is
    #   gemm_step's (code, weight, first, second, coef), code NONE for the gradient alone;
    #   dbias (O,) += column sums of dout; both overwritten instead when not accumulate
    # dinp (B, I) overwritten with (dout @ weight^T) * act'(inp), the gradient w.r.t. the previous
    #   layer's pre-activation; pass dinp of shape (0, I) to skip it (the first layer); dinp may be
    #   inp itself where deltas_in_place(act)
    # dout (B, O): gradient w.r.t. this layer's pre-activation; inp (B, I): this layer's input;
    # weightT (O, I): the weight transposed; act: the previous layer's activation, a literal (_fused)
    gemm_step(dweight, inp, dout, accumulate, step)
    if not accumulate:
        clear(dbias)
    column_sums(dbias, dout)
    if dinp.shape[0] == 0:
        return
    _product_input_gradient(dinp, dout, weightT, dbias, inp, act)


@jit(inline="always")
def output_backward(h, dweight, dbias, dz, weight, act):
    # dense_backward for a layer of one output, the binary output layer, after a relu or leaky
    # relu layer (act), in one pass over its input h (B, I) rather than two products of width 1,
    # the deltas in the activations' place (deltas_in_place): dweight (I, 1) += h^T @ dz; dbias
    # (1,) += sum of dz; then h overwritten with dz @ weight^T * act'(h).  dz (B, 1); weight (I, 1).
    # Each element is the sum, in the same order, that the two products give; only leaky relu's
    # slope * dz * w may round once differently (fastmath hoists slope * dz out of the loop).
    B, I = h.shape
    w, dw = weight.reshape(I), dweight.reshape(I)
    slope = h.dtype.type(_slope(act))         # in the dtype, as gemm's GATE epilogue takes it
    for b in range(B):
        d = dz[b, 0]
        for j in range(I):
            a = h[b, j]
            dw[j] += a * d
            v = d * w[j]
            h[b, j] = v if a > 0 else slope * v
    column_sums(dbias, dz)


@jit(inline="always")
def clear(x):
    # x (n,) = 0, a loop: lighter to compile than the slice assignment x[:] = 0
    for i in range(x.shape[0]):
        x[i] = 0.0


@jit(python=False)
def column_sums(total, x):
    # total (O,) += the column sums of x (B, O), eight rows per pass over total
    B, O = x.shape
    b8 = B - B % 8
    for b in range(0, b8, 8):
        for j in range(O):
            total[j] += (((x[b, j] + x[b + 1, j]) + (x[b + 2, j] + x[b + 3, j]))
                         + ((x[b + 4, j] + x[b + 5, j]) + (x[b + 6, j] + x[b + 7, j])))
    for b in range(b8, B):
        for j in range(O):
            total[j] += x[b, j]


@jit(inline="always")
def _slope(act):
    # the negative-side slope of the activations fused into gemm's epilogue
    return 0.0 if act == RELU else (LEAKY_SLOPE if act == LEAKY_RELU else 1.0)


LINE_BYTES = 64          # a cache line


@jit
def transpose(outT, x):
    # outT (C, R) overwritten with x (R, C) transposed: in blocks of V x V (V lanes of a vector,
    # gemm.transpose_block), a cache line's columns of x at a time, so that each row of outT is
    # written a whole line at once, not one element (one line of its own) per write; then element
    # by element what the blocks leave, the rows below them and the columns to their right
    R, C = x.shape
    V, line = VECTOR_BYTES // x.itemsize, LINE_BYTES // x.itemsize
    rb, cb = R - R % V, C - C % line
    for c0 in range(0, cb, line):
        for r0 in range(0, rb, V):
            for c in range(c0, c0 + line, V):
                transpose_block(outT, x, r0, c)
    for r in range(R):
        for c in range(cb if r < rb else 0, C):
            outT[c, r] = x[r, c]


@jit
def activation_forward(z, bias, act):
    # z (B, O) pre-activations without bias, replaced in place by act(z + bias); bias (O,)
    # One loop per activation, each branch-free (selects) so it vectorises; constants carry z's
    # dtype so float32 stays float32.  relu keeps a NaN a NaN (0 * v), so a broken instance is
    # still caught by the finiteness checks.
    B, O = z.shape
    zero, slope = z.dtype.type(0), z.dtype.type(LEAKY_SLOPE)
    if act == RELU:
        for b in range(B):
            for j in range(O):
                v = z[b, j] + bias[j]
                z[b, j] = v if v > zero else zero * v
    elif act == LEAKY_RELU:
        for b in range(B):
            for j in range(O):
                v = z[b, j] + bias[j]
                z[b, j] = v if v > zero else slope * v
    elif act == TANH:
        for b in range(B):
            for j in range(O):
                z[b, j] = math.tanh(z[b, j] + bias[j])
    elif act == SIGMOID:
        for b in range(B):
            for j in range(O):
                z[b, j] = _sigmoid(z[b, j] + bias[j])
    else:
        for b in range(B):
            for j in range(O):
                z[b, j] += bias[j]


@jit
def activation_backward(d, a, act):
    # d (B, O): gradient w.r.t. the activation, turned in place into the gradient w.r.t. the
    # pre-activation; a (B, O): the activation (every derivative here is a function of it)
    B, O = d.shape
    one, zero, slope = d.dtype.type(1), d.dtype.type(0), d.dtype.type(LEAKY_SLOPE)
    if act == RELU:
        for b in range(B):
            for j in range(O):
                d[b, j] *= one if a[b, j] > zero else zero
    elif act == LEAKY_RELU:
        for b in range(B):
            for j in range(O):
                d[b, j] *= one if a[b, j] > zero else slope
    elif act == TANH:
        for b in range(B):
            for j in range(O):
                d[b, j] *= one - a[b, j] * a[b, j]
    elif act == SIGMOID:
        for b in range(B):
            for j in range(O):
                d[b, j] *= a[b, j] * (one - a[b, j])


def output_loss(loss_terms, dz, z, target, penalty, scale, binary):
    """The loss of the logits z and its gradient (overloaded below): ``sigmoid_xent`` for one
    output, else ``softmax_xent``."""


@overload(output_loss, prefer_literal=True)
def _output_loss_overload(loss_terms, dz, z, target, penalty, scale, binary):
    xent = sigmoid_xent if _binary(binary) else softmax_xent
    return lambda loss_terms, dz, z, target, penalty, scale, binary: xent(loss_terms, dz, z, target, penalty, scale)


@jit(fastmath=CONTRACT, error_model="numpy")    # elementary's reductions; a division that vectorises
def sigmoid_xent(loss_terms, dz, z, target, penalty, scale):
    # loss_terms (B,) overwritten: binary cross-entropy of sigmoid(penalty * z) per sample;
    # dz (B, 1) overwritten: scale * d loss / d z = scale * penalty * (sigmoid(penalty z) - t)
    # z (B, 1) logits; target (B, 1) in {0, 1}
    # log-sigmoid form: -t log s(u) - (1-t) log(1-s(u)) = softplus(u) - t u, u = penalty * z; one
    # exp of a non-positive number, exp(-|u|), serves the softplus and the sigmoid.  In float64
    # for either dtype, with elementary's exp and log1p, so the loop vectorises
    for b in range(z.shape[0]):
        u = np.float64(penalty * z[b, 0])
        e = exp_nonpositive(-abs(u))
        loss_terms[b] = max(u, 0.0) + log1p_unit(e) - target[b, 0] * u
        dz[b, 0] = scale * penalty * ((1.0 if u >= 0.0 else e) / (1.0 + e) - target[b, 0])


@jit
def softmax_xent(loss_terms, dz, z, target, penalty, scale):
    # loss_terms (B,) overwritten: cross-entropy of softmax(penalty * z); z (B, K); target (B, K) one-hot
    # dz (B, K) overwritten: scale * penalty * (softmax(penalty z) - t)
    # log-sum-exp form with the row maximum subtracted: never exp of a positive number; the exps
    # serve the loss and the gradient
    for b in range(z.shape[0]):
        m, s = _softmax_row(dz, z, b, penalty)
        lse = m + math.log(s)
        t = 0.0
        for k in range(z.shape[1]):
            t += target[b, k] * (lse - penalty * z[b, k])
            dz[b, k] = scale * penalty * (dz[b, k] / s - target[b, k])
        loss_terms[b] = t


@jit(inline="always")
def _softmax_row(e, z, b, penalty):
    # e[b, :] overwritten with exp(penalty * z[b, :] - m), m the row's maximum of penalty * z, so
    # no exp of a positive number; returns m and the sum of e[b, :]
    K = z.shape[1]
    m = penalty * z[b, 0]
    for k in range(1, K):
        m = max(m, penalty * z[b, k])
    s = 0.0
    for k in range(K):
        e[b, k] = math.exp(penalty * z[b, k] - m)
        s += e[b, k]
    return m, s


def output_proba(proba, z, penalty, binary):
    """proba (B, K) overwritten with the predicted probabilities of logits z (B, K) (overloaded
    below): for one output sigmoid(penalty z), the probability of class 1; else softmax(penalty z)."""


@overload(output_proba, prefer_literal=True)
def _output_proba_overload(proba, z, penalty, binary):
    if _binary(binary):
        def impl(proba, z, penalty, binary):
            for b in range(z.shape[0]):
                proba[b, 0] = _sigmoid(penalty * z[b, 0])
    else:
        def impl(proba, z, penalty, binary):
            for b in range(z.shape[0]):
                _, s = _softmax_row(proba, z, b, penalty)
                for k in range(z.shape[1]):
                    proba[b, k] /= s
    return impl
