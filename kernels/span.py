"""Whole-network kernels: one training span (many epochs between two sync points) and prediction.

Dimensions: n = samples, F = features, K = outputs (1 for binary), L = layers,
P = parameters of one instance, E = epochs in the span, N = instances, B = batch,
I/O = a layer's fan_in/fan_out.

One instance's parameters are one flat buffer ``params`` (P,), laid out as ``kernels/layout.py``
says; its optimizer state is ``moments`` (2, P), laid out like it, and ``steps`` (1,) int64, the
steps taken (``_update`` says what each optimizer keeps there); ``grad`` (P,) is scratch for the
gradient, laid out like them.  ``work`` (W,) is the per-instance scratch allocated once by the
driver (``workspace_size``): for each layer its activations and deltas (C, O) for a chunk of
C = min(B, chunk_rows(sizes, itemsize)) rows (a hidden layer's deltas in its activations' place
after relu and leaky relu, ``_deltas``), and its weight transposed (O, I); then a gathered batch of X (B, F) and
of T (B, K), the per-sample losses (B,), and the step's coefficients (``_coefficients``).
Nothing is allocated inside the epoch loop but the packing buffer of a large float32 weight
gradient (``gemm._define_packed``).
"""
import math

import numba
import numpy as np

from .config import (ADAM, BATCH_SIZE, BETA1, BETA2, CHUNK_BYTES, CHUNK_FOOTPRINT, CHUNK_ROWS, CONTRACT, EPS, L2, LR,
                     MOMENTUM, OPTIMIZER, PENALTY, S_BETA1, S_BETA2, S_EPS, S_L2, S_LR, S_MOMENTUM, S_ROOT, S_SIZE,
                     STEP_COLUMNS, Specialised, jit)
from .elementary import muladd
from .gemm import ADAM_STEP, MOMENTUM_STEP, NONE, PLAIN_STEP, steps_in_epilogue
from .layout import layer_offset_jit
from .layers import (
    deltas_in_place,
    dense_backward,
    dense_forward,
    one_pass_output,
    output_layer_backward,
    output_layer_forward,
    output_loss,
    output_proba,
    transpose,
)


def workspace_size(sizes, batch, dtype=np.float64):
    """Length of the scratch buffer ``work`` of ``dtype`` for ``batch`` samples per step."""
    return int(workspace_size_jit(np.asarray(sizes, dtype=np.int64), batch, np.dtype(dtype).itemsize))


@jit(inline="always")
def chunk_rows(sizes, itemsize):
    # rows of a chunk of a network of layer sizes (L + 1,), elements of itemsize bytes: config's
    # CHUNK_ROWS, halved while the activations outgrow CHUNK_FOOTPRINT, down to CHUNK_BYTES // itemsize
    width = 0
    for l in range(1, sizes.shape[0]):
        width += sizes[l]
    rows = CHUNK_ROWS
    while rows > CHUNK_BYTES // itemsize and rows * width * itemsize > CHUNK_FOOTPRINT:
        rows //= 2
    return rows


@jit(python=False)
def _layer(params, sizes, l):
    # views (no copy) of layer l's weight (I, O) and bias (O,) inside params (P,)
    off = layer_offset_jit(sizes, l)
    I, O = sizes[l], sizes[l + 1]
    return params[off:off + I * O].reshape((I, O)), params[off + I * O:off + I * O + O]


@jit(python=False)
def _layer_size(sizes, l, B):
    # scratch of layer l: activations and deltas (B, O), weightT (O, I)
    return 2 * B * sizes[l + 1] + sizes[l] * sizes[l + 1]


@jit(python=False)
def _buffers(work, sizes, l, C, B):
    # views of layer l's activations (B, O), deltas (B, O) and weightT (O, I) inside work (W),
    # laid out for chunks of C rows; B <= C rows in use
    off = 0
    for m in range(l):
        off += _layer_size(sizes, m, C)
    I, O = sizes[l], sizes[l + 1]
    return (work[off:off + B * O].reshape((B, O)),
            work[off + C * O:off + C * O + B * O].reshape((B, O)),
            work[off + 2 * C * O:off + 2 * C * O + O * I].reshape((O, I)))


@jit(inline="always")
def _deltas(work, sizes, l, C, B, act):
    # views of layer l's deltas (B, O) and weightT (O, I), as _buffers': a hidden layer's deltas in
    # its activations' place where layers.deltas_in_place(act)
    out, deltas, weightT = _buffers(work, sizes, l, C, B)
    if l < sizes.shape[0] - 2 and deltas_in_place(act):
        return out, weightT
    return deltas, weightT


@jit(python=False)
def _rows(X, r0, r1):
    # rows r0:r1 of a C-contiguous X (n, F) as a C-contiguous view (a plain slice would not be
    # typed contiguous, and gemm takes C-contiguous arrays only)
    F = X.shape[1]
    return X.reshape(X.shape[0] * F)[r0 * F:r1 * F].reshape((r1 - r0, F))


@jit(python=False)
def _batch_buffers(work, sizes, B):
    # views of a gathered batch Xb (B, F), Tb (B, K) and the per-sample losses (B,) after the
    # layers' scratch, which holds one chunk of at most chunk_rows rows
    off, C = 0, min(B, chunk_rows(sizes, work.itemsize))
    L = sizes.shape[0] - 1
    for m in range(L):
        off += _layer_size(sizes, m, C)
    F, K = sizes[0], sizes[L]
    return (work[off:off + B * F].reshape((B, F)),
            work[off + B * F:off + B * (F + K)].reshape((B, K)),
            work[off + B * (F + K):off + B * (F + K + 1)])


@jit
def workspace_size_jit(sizes, batch, itemsize):
    total = batch * (sizes[0] + sizes[-1] + 1) + len(STEP_COLUMNS)
    C = min(batch, chunk_rows(sizes, itemsize))
    for l in range(sizes.shape[0] - 1):
        total += _layer_size(sizes, l, C)
    return total


@jit(inline="always")           # in _step, as cheaply compiled there as on its own
def _coefficients(work, hyper, t):
    # the coefficients of step t (config.STEP_COLUMNS) into the last slots of work, in its dtype
    # (Adam's bias corrections computed in float64: b^t of a float32 b would lose digits), and the
    # step's code for gemm_step: the view and the code
    coef = work[work.shape[0] - len(STEP_COLUMNS):]
    coef[S_LR], coef[S_L2], coef[S_MOMENTUM] = hyper[LR], hyper[L2], hyper[MOMENTUM]
    if hyper[OPTIMIZER] != ADAM:
        return coef, (PLAIN_STEP if hyper[MOMENTUM] == 0.0 else MOMENTUM_STEP)
    b1, b2 = np.float64(hyper[BETA1]), np.float64(hyper[BETA2])
    coef[S_BETA1], coef[S_BETA2], coef[S_EPS] = b1, b2, hyper[EPS]
    coef[S_SIZE], coef[S_ROOT] = hyper[LR] / (1.0 - b1 ** t), 1.0 / math.sqrt(1.0 - b2 ** t)
    return coef, ADAM_STEP


@jit(python=False)
def _forward(work, X, params, sizes, act, C, binary):
    # activations of every layer for the rows of X (B <= C) into work laid out for chunks of C
    # rows; the last layer keeps its logits (B, K)
    L = sizes.shape[0] - 1
    inp = X
    for l in range(L):
        weight, bias = _layer(params, sizes, l)
        out, _, _ = _buffers(work, sizes, l, C, X.shape[0])
        if l < L - 1:
            dense_forward(out, inp, weight, bias, act)
        else:
            output_layer_forward(out, inp, weight, bias, binary)
        inp = out


@jit(python=False)
def _step(params, first, second, steps, grad, work, X, T, sizes, act, hyper, terms, cancel, binary):
    # one optimizer step on the batch X (B, F), T (B, K); params, the moments first and second (P,),
    # steps, grad, work changed in place; terms (B,) receives the per-sample losses before the step.
    # Returns False, with params, moments and steps untouched, if cancel (1,) was set before one of
    # its chunks.
    # The batch goes through forward and backward chunk_rows rows at a time, the gradient accumulating
    # over chunks: the activations and deltas of a chunk stay in L2 whatever B is, so instances on
    # different cores do not compete for the shared cache.  The last chunk's weight gradients
    # take the optimizer's step in their epilogue where they can (gemm.gemm_step): their
    # gradients are not written, and the step makes no pass of its own over those weights.
    B = X.shape[0]
    L = sizes.shape[0] - 1
    penalty = hyper[PENALTY]
    scale = 1.0 / B
    chunk = chunk_rows(sizes, params.itemsize)
    C = min(B, chunk)
    coef, code = _coefficients(work, hyper, steps[0] + 1)
    for l in range(1, L):
        # the weights transposed for the input gradients (the first layer needs none, nor does
        # output_backward)
        if l < L - 1 or not one_pass_output(act, binary):
            weight, _ = _layer(params, sizes, l)
            _, _, weightT = _buffers(work, sizes, l, C, C)
            transpose(weightT, weight)
    for r0 in range(0, B, chunk):
        if cancel[0] != 0:
            return False
        r1 = min(B, r0 + chunk)
        m = r1 - r0
        Xc, Tc = _rows(X, r0, r1), _rows(T, r0, r1)
        _forward(work, Xc, params, sizes, act, C, binary)
        z, dz, _ = _buffers(work, sizes, L - 1, C, m)
        output_loss(terms[r0:r1], dz, z, Tc, penalty, scale, binary)
        for l in range(L - 1, -1, -1):
            dweight, dbias = _layer(grad, sizes, l)
            dout, weightT = _deltas(work, sizes, l, C, m, act)
            weight, _ = _layer(params, sizes, l)
            if r1 == B and steps_in_epilogue(sizes[l + 1], params.itemsize):
                step = (code, weight, _layer(first, sizes, l)[0], _layer(second, sizes, l)[0], coef)
            else:
                step = (NONE, weight, weight, weight, coef)      # the gradient alone (no moments read)
            if l == 0:      # the first layer: no input gradient
                inp, dinp = Xc, work[:0].reshape((0, sizes[0]))
            else:
                inp, _, _ = _buffers(work, sizes, l - 1, C, m)
                dinp, _ = _deltas(work, sizes, l - 1, C, m, act)
            if 0 < l == L - 1:
                output_layer_backward(dinp, dweight, dbias, dout, inp, weightT, act, binary, r0 > 0, step)
            else:
                dense_backward(dinp, dweight, dbias, dout, inp, weightT, act, r0 > 0, step)
    _update(params, first, second, steps, grad, sizes, coef, code)
    return True


@jit
def _update(params, first, second, steps, grad, sizes, coef, code):
    # the optimizer's step (code: gemm's PLAIN_STEP, MOMENTUM_STEP or ADAM_STEP; coefficients coef,
    # _coefficients') on params (P,) from the data-loss gradient grad (P,): on every parameter but
    # the weights whose gradient took it in its epilogue (those of a fan-out steps_in_epilogue
    # admits, _step), in as few runs of consecutive parameters as those leave.  L2 on the weights
    # (not the biases) is added to their gradient first -- coupled, as torch.optim's weight_decay,
    # not AdamW's decoupled decay.  The moments first, second (P,), in place: SGD's velocity
    # (second unused), Adam's first and second moments; steps (1,) int64 counts the steps, Adam's t.
    L, l2 = sizes.shape[0] - 1, coef[S_L2]
    run = 0         # the first parameter not yet stepped
    for l in range(L):
        start = layer_offset_jit(sizes, l)
        bias = start + sizes[l] * sizes[l + 1]
        if steps_in_epilogue(sizes[l + 1], params.itemsize):
            _step_range(params[run:start], first[run:start], second[run:start], grad[run:start], coef, code)
            run = bias
        elif l2 != 0.0:
            dweight, weight = grad[start:bias], params[start:bias]
            for p in range(weight.shape[0]):
                dweight[p] += l2 * weight[p]
    P = params.shape[0]
    _step_range(params[run:P], first[run:P], second[run:P], grad[run:P], coef, code)
    steps[0] += 1


# Adam's division vectorises (config.jit); never reassociated, and each multiply-add a muladd, so
# that every step rounds as the epilogue's
@jit(error_model="numpy", fastmath=CONTRACT, python=False)
def _step_range(params, first, second, grad, coef, code):
    # the step of _update on a run of the parameters, views params, first, second, grad (R,) (the
    # loops index from 0, so they vectorise), L2 already in grad; with it, the arithmetic of
    # gemm._emit_step, the epilogue's, in the same order.  Adam is step t of Kingma & Ba 2015
    # (algorithm 1) in torch.optim.Adam's arrangement, the bias corrections in the step size and
    # the root (config.STEP_COLUMNS), so eps is added to the corrected sqrt(v), as in the paper:
    #   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= size * m / (sqrt(v) * root + eps)
    # all in the dtype, as torch.optim's for float32 parameters (twice as many lanes of sqrt and
    # division)
    lr, mu = coef[S_LR], coef[S_MOMENTUM]
    if code == ADAM_STEP:
        b1, b2, eps, size, root = coef[S_BETA1], coef[S_BETA2], coef[S_EPS], coef[S_SIZE], coef[S_ROOT]
        one = params.dtype.type(1)
        for p in range(params.shape[0]):
            g = grad[p]
            mp = muladd(b1, first[p], (one - b1) * g)
            vp = muladd(b2, second[p], (one - b2) * (g * g))
            first[p], second[p] = mp, vp
            params[p] -= size * mp / muladd(np.sqrt(vp), root, eps)
    elif code == MOMENTUM_STEP:
        for p in range(params.shape[0]):
            first[p] = muladd(mu, first[p], -(lr * grad[p]))
            params[p] += first[p]
    else:
        for p in range(params.shape[0]):
            params[p] -= lr * grad[p]


@jit(python=False)
def _l2_term(params, sizes, l2):
    # 0.5 * l2 * sum of squared weights (biases excluded)
    s = 0.0
    for l in range(sizes.shape[0] - 1):
        weight, _ = _layer(params, sizes, l)
        for i in range(weight.shape[0]):
            for j in range(weight.shape[1]):
                s += weight[i, j] * weight[i, j]
    return 0.5 * l2 * s


@jit
def _next_u64(rng):
    # splitmix64; rng (1,) uint64 state advanced in place
    z = rng[0] + np.uint64(0x9E3779B97F4A7C15)
    rng[0] = z
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@jit
def _shuffle(order, rng):
    # Fisher-Yates permutation of order (n,) in place, from the instance's own generator
    for i in range(order.shape[0] - 1, 0, -1):
        j = np.int64(_next_u64(rng) % np.uint64(i + 1))
        order[i], order[j] = order[j], order[i]


@jit(inline="always")
def _check_binary(sizes, binary):
    # binary is the network's: one output (a sigmoid) or K (a softmax)
    if binary != (sizes[sizes.shape[0] - 1] == 1):
        raise ValueError("binary must be whether the network has one output (sizes[-1] == 1)")


def _train_span(params, moments, steps, rng, losses, X, T, sizes, act, hyper, work, grad, order, cancel, done, binary):
    # Train one instance for losses.shape[0] epochs, or until cancel (1,) int64 is set: it is read
    # before every chunk of every step, so a cancelled span returns within a chunk's work.
    # params, grad (P,), moments (2, P), steps (1,) int64, rng (1,) uint64, work (W,), order (n,)
    # int64: changed in place
    # losses (E,): mean loss of each epoch, written; done (1,) int64: incremented after each epoch
    # (the stall watchdog reads it); X (n, F), T (n, K), sizes (L+1,), hyper (H,); binary: K == 1
    numba.literally(act)    # compiled for the run's activation alone (layers._fused)
    numba.literally(binary)     # and for its output, one sigmoid or a softmax (layers._binary)
    _check_binary(sizes, binary)
    n, F = X.shape
    K = T.shape[1]
    B = min(n, max(1, np.int64(hyper[BATCH_SIZE])))
    _, _, terms = _batch_buffers(work, sizes, B)
    first, second = moments[0], moments[1]
    for e in range(losses.shape[0]):
        l2 = hyper[L2]
        total = _l2_term(params, sizes, l2) if l2 != 0.0 else 0.0
        if B == n:
            if not _step(params, first, second, steps, grad, work, X, T, sizes, act, hyper, terms, cancel, binary):
                return
            for b in range(B):
                total += terms[b] / n
        else:
            _shuffle(order, rng)
            for start in range(0, n, B):
                m = min(B, n - start)
                # the last batch may be smaller: its buffers are laid out for m samples
                Xb, Tb, terms_b = _batch_buffers(work, sizes, m)
                for b in range(m):
                    r = order[start + b]
                    for f in range(F):
                        Xb[b, f] = X[r, f]
                    for k in range(K):
                        Tb[b, k] = T[r, k]
                if not _step(params, first, second, steps, grad, work, Xb, Tb, sizes, act, hyper, terms_b, cancel,
                             binary):
                    return
                for b in range(m):
                    total += terms_b[b] / n
        losses[e] = total
        done[0] += 1


# The same span compiled twice: releasing the GIL (the library's kernel) and holding it (the
# "numba-gil" comparison).  Numba's cache index does not include `nogil`, so the GIL-holding
# build stays out of the cache where it could shadow the nogil one.
_span = jit(_train_span)
train_span = Specialised(_span, 8, 15)
train_span_gil = Specialised(jit(_train_span, nogil=False, cache=False), 8, 15)


@jit(parallel=True)
def _spans_parallel(params, moments, steps, rng, losses, e0, e1, X, T, sizes, act, hyper, work, grad, order,
                    cancel, done, binary):
    # All N instances for epochs [e0, e1), one per prange iteration; every argument but e0, e1, X,
    # T, sizes, act, cancel (1,) and binary carries a leading instance axis (N, ...).  Each
    # iteration writes only its rows.
    numba.literally(act)
    numba.literally(binary)
    for k in numba.prange(params.shape[0]):
        _span(params[k], moments[k], steps[k:k + 1], rng[k], losses[k, e0:e1], X, T, sizes, act, hyper[k],
              work[k], grad[k], order[k], cancel, done[k:k + 1], binary)


train_spans_parallel = Specialised(_spans_parallel, 10, 17)


@jit
def _predict_proba(proba, X, params, sizes, act, penalty, binary):
    # proba (n, K) overwritten with one instance's predicted probabilities for X (n, F); params (P,);
    # binary: K == 1
    numba.literally(act)
    numba.literally(binary)
    _check_binary(sizes, binary)
    n = X.shape[0]
    chunk = chunk_rows(sizes, params.itemsize)
    C = min(n, chunk)
    work = np.empty(workspace_size_jit(sizes, C, params.itemsize), dtype=params.dtype)
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        _forward(work, _rows(X, r0, r1), params, sizes, act, C, binary)
        z, _, _ = _buffers(work, sizes, sizes.shape[0] - 2, C, r1 - r0)
        output_proba(proba[r0:r1], z, penalty, binary)


predict_proba = Specialised(_predict_proba, 4, 6)
