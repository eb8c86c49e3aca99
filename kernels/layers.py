"""Per-layer kernels: one forward/backward pair per pass, activations fused into them.

Dimensions: B = samples in the batch, I = fan_in, O = fan_out, K = outputs.
Argument order follows llm.c: outputs first, then inputs and weights.  Backward kernels
*accumulate* into weight/bias gradients (cleared once per step) and *overwrite* the input gradient.

The two products with a short reduction (over fan_in in the forward pass, over fan_out for the
input gradient) are written in dot form, ``C[r, c] = sum_k A[r, k] * Bm[c, k]``, both operands
read along contiguous rows: the reduction vectorises (``reassoc``) and a 4 x 2 block of C is
accumulated in registers (``_dot_block``), so each load feeds several multiply-adds.  The weight
gradient reduces over the long batch axis and is written as rank-8 updates (``matmul_tn``).  No
activation or delta is ever transposed; only the small weight matrix is (``transpose``).
"""
import math

from .config import LEAKY_RELU, LEAKY_SLOPE, RELU, SIGMOID, TANH, jit

ROWS, COLS = 4, 2    # register block of C; measured best of 1x8 .. 4x4 on AVX2 (float64)


@jit(inline="always")
def _sigmoid(x):
    # stable for any x: exp of a non-positive number only
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@jit(inline="always")
def _softplus(x):
    # log(1 + exp(x)), stable for any x
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@jit(inline="always")
def _dot(A, r, Bm, c):
    # sum_k A[r, k] * Bm[c, k]
    s = A.dtype.type(0)
    for k in range(A.shape[1]):
        s += A[r, k] * Bm[c, k]
    return s


@jit(inline="always")
def _dot_block(A, r, Bm, c):
    # the 4 x 2 block C[r:r+4, c:c+2] of sum_k A[r, k] * Bm[c, k], accumulated in registers
    s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = A.dtype.type(0)
    for k in range(A.shape[1]):
        w0, w1 = Bm[c, k], Bm[c + 1, k]
        a0, a1, a2, a3 = A[r, k], A[r + 1, k], A[r + 2, k], A[r + 3, k]
        s00 += a0 * w0
        s01 += a0 * w1
        s10 += a1 * w0
        s11 += a1 * w1
        s20 += a2 * w0
        s21 += a2 * w1
        s30 += a3 * w0
        s31 += a3 * w1
    return s00, s01, s10, s11, s20, s21, s30, s31


@jit
def matmul_nt(out, A, Bm, accumulate):
    # out (R, C) = A (R, K) @ Bm (C, K)^T, added to out when accumulate, else overwriting it
    R, C = out.shape
    rb, cb = R - R % ROWS, C - C % COLS
    for r in range(0, rb, ROWS):
        for c in range(0, cb, COLS):
            s00, s01, s10, s11, s20, s21, s30, s31 = _dot_block(A, r, Bm, c)
            if accumulate:
                s00 += out[r, c]
                s01 += out[r, c + 1]
                s10 += out[r + 1, c]
                s11 += out[r + 1, c + 1]
                s20 += out[r + 2, c]
                s21 += out[r + 2, c + 1]
                s30 += out[r + 3, c]
                s31 += out[r + 3, c + 1]
            out[r, c], out[r, c + 1] = s00, s01
            out[r + 1, c], out[r + 1, c + 1] = s10, s11
            out[r + 2, c], out[r + 2, c + 1] = s20, s21
            out[r + 3, c], out[r + 3, c + 1] = s30, s31
        for c in range(cb, C):
            for rr in range(r, r + ROWS):
                out[rr, c] = _dot(A, rr, Bm, c) + (out[rr, c] if accumulate else 0.0)
    for r in range(rb, R):
        for c in range(C):
            out[r, c] = _dot(A, r, Bm, c) + (out[r, c] if accumulate else 0.0)


@jit
def matmul_tn(out, A, Bm):
    # out (I, O) += A (B, I)^T @ Bm (B, O): the weight gradient, with no transposed copies.
    # Eight rows of the batch at a time: each out row is loaded and stored once per 8 samples
    # while the 8 rows of Bm stay in L1, so the vectorised j-loop is bound by multiply-adds.
    B, I = A.shape
    O = Bm.shape[1]
    if O < COLS:
        # too narrow to vectorise along O (the output layer): vectorise along I instead
        for j in range(O):
            for b in range(B):
                d = Bm[b, j]
                for i in range(I):
                    out[i, j] += A[b, i] * d
        return
    b8 = B - B % 8
    for b in range(0, b8, 8):
        for i in range(I):
            a0, a1, a2, a3 = A[b, i], A[b + 1, i], A[b + 2, i], A[b + 3, i]
            a4, a5, a6, a7 = A[b + 4, i], A[b + 5, i], A[b + 6, i], A[b + 7, i]
            for j in range(O):
                out[i, j] += (a0 * Bm[b, j] + a1 * Bm[b + 1, j] + a2 * Bm[b + 2, j] + a3 * Bm[b + 3, j]
                              + a4 * Bm[b + 4, j] + a5 * Bm[b + 5, j] + a6 * Bm[b + 6, j]
                              + a7 * Bm[b + 7, j])
    for b in range(b8, B):
        for i in range(I):
            a = A[b, i]
            for j in range(O):
                out[i, j] += a * Bm[b, j]


@jit
def dense_forward(out, inp, weightT, bias, act):
    # out (B, O) overwritten with act(inp @ weight + bias); act = IDENTITY for logits
    # inp (B, I); weightT (O, I): the weight (I, O) transposed, so the product is in dot form
    matmul_nt(out, inp, weightT, False)
    activation_forward(out, bias, act)


@jit
def dense_backward(dinp, dweight, dbias, dout, inp, weight, act):
    # dweight (I, O) += inp^T @ dout; dbias (O,) += column sums of dout
    # dinp (B, I) overwritten with (dout @ weight^T) * act'(inp), the gradient w.r.t. the previous
    #   layer's pre-activation; pass dinp of shape (0, I) to skip it (the first layer)
    # dout (B, O): gradient w.r.t. this layer's pre-activation; inp (B, I): this layer's input;
    # weight (I, O); act: the previous layer's activation
    matmul_tn(dweight, inp, dout)
    for b in range(dout.shape[0]):
        for j in range(dout.shape[1]):
            dbias[j] += dout[b, j]
    if dinp.shape[0] == 0:
        return
    if weight.shape[1] < COLS:
        # a reduction too short for dot products (the output layer, O = 1): axpy along rows
        for b in range(dinp.shape[0]):
            d = dout[b, 0]
            for i in range(dinp.shape[1]):
                dinp[b, i] = d * weight[i, 0]
    else:
        matmul_nt(dinp, dout, weight, False)
    activation_backward(dinp, inp, act)


@jit
def transpose(outT, x):
    # outT (C, R) overwritten with x (R, C) transposed
    for r in range(x.shape[0]):
        for c in range(x.shape[1]):
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


@jit
def sigmoid_xent_forward(loss_terms, z, target, penalty):
    # loss_terms (B,) overwritten: binary cross-entropy of sigmoid(penalty * z) per sample
    # z (B, 1) logits; target (B, 1) in {0, 1}
    # log-sigmoid form: -t log s(u) - (1-t) log(1-s(u)) = softplus(u) - t u, u = penalty * z
    for b in range(z.shape[0]):
        u = penalty * z[b, 0]
        loss_terms[b] = _softplus(u) - target[b, 0] * u


@jit
def sigmoid_xent_backward(dz, z, target, penalty, scale):
    # dz (B, 1) overwritten: scale * d loss / d z = scale * penalty * (sigmoid(penalty z) - t)
    for b in range(z.shape[0]):
        dz[b, 0] = scale * penalty * (_sigmoid(penalty * z[b, 0]) - target[b, 0])


@jit
def softmax_xent_forward(loss_terms, z, target, penalty):
    # loss_terms (B,) overwritten: cross-entropy of softmax(penalty * z); z (B, K); target (B, K) one-hot
    # log-sum-exp form with the row maximum subtracted: never exp of a positive number
    B, K = z.shape
    for b in range(B):
        m = penalty * z[b, 0]
        for k in range(1, K):
            m = max(m, penalty * z[b, k])
        s = 0.0
        for k in range(K):
            s += math.exp(penalty * z[b, k] - m)
        lse = m + math.log(s)
        t = 0.0
        for k in range(K):
            t += target[b, k] * (lse - penalty * z[b, k])
        loss_terms[b] = t


@jit
def softmax_xent_backward(dz, z, target, penalty, scale):
    # dz (B, K) overwritten: scale * penalty * (softmax(penalty z) - t)
    B, K = z.shape
    for b in range(B):
        m = penalty * z[b, 0]
        for k in range(1, K):
            m = max(m, penalty * z[b, k])
        s = 0.0
        for k in range(K):
            e = math.exp(penalty * z[b, k] - m)
            dz[b, k] = e
            s += e
        for k in range(K):
            dz[b, k] = scale * penalty * (dz[b, k] / s - target[b, k])


@jit
def output_proba(proba, z, penalty):
    # proba (B, K) overwritten with the predicted probabilities of logits z (B, K);
    # K = 1: sigmoid(penalty z), the probability of class 1; K > 1: softmax(penalty z)
    B, K = z.shape
    if K == 1:
        for b in range(B):
            proba[b, 0] = _sigmoid(penalty * z[b, 0])
        return
    for b in range(B):
        m = penalty * z[b, 0]
        for k in range(1, K):
            m = max(m, penalty * z[b, k])
        s = 0.0
        for k in range(K):
            proba[b, k] = math.exp(penalty * z[b, k] - m)
            s += proba[b, k]
        for k in range(K):
            proba[b, k] /= s
