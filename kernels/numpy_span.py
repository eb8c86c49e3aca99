"""The span kernel's algorithm in plain numpy, one library call per layer in a Python loop -- the
way the 2020 report trained.  It holds the GIL between calls; ``kernel="numpy"`` uses it to show
what the GIL costs.  Same arguments and results (to rounding) as ``span.train_span``."""
import numpy as np

from .layout import layer_offset
from .config import (ADAM, BATCH_SIZE, BETA1, BETA2, EPS, L2, LEAKY_RELU, LEAKY_SLOPE, LR, MOMENTUM, OPTIMIZER,
                     PENALTY, RELU, SIGMOID, TANH)

_MASK = (1 << 64) - 1


def _next_u64(rng):
    # splitmix64, as span._next_u64; rng (1,) uint64 advanced in place
    z = (int(rng[0]) + 0x9E3779B97F4A7C15) & _MASK
    rng[0] = z
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _activate(z, act):
    if act == RELU:
        return np.maximum(z, 0.0)
    if act == LEAKY_RELU:
        return np.where(z < 0.0, LEAKY_SLOPE * z, z)
    if act == TANH:
        return np.tanh(z)
    return 0.5 * (1.0 + np.tanh(0.5 * z)) if act == SIGMOID else z


def _activate_backward(d, a, act):
    if act == RELU:
        return np.where(a <= 0.0, 0.0, d)
    if act == LEAKY_RELU:
        return np.where(a <= 0.0, LEAKY_SLOPE * d, d)
    if act == TANH:
        return d * (1.0 - a * a)
    return d * a * (1.0 - a)


def _loss_and_dz(z, t, penalty):
    # per-sample loss (B,) and dloss/dz (B, K) of the mean loss, in stable forms
    u = penalty * z
    B = z.shape[0]
    if z.shape[1] == 1:
        terms = np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u))) - t * u
        s = np.where(u >= 0, 1.0 / (1.0 + np.exp(-np.abs(u))), np.exp(-np.abs(u)) / (1.0 + np.exp(-np.abs(u))))
        return terms[:, 0], (1.0 / B) * penalty * (s - t)
    m = u.max(axis=1, keepdims=True)
    e = np.exp(u - m)
    lse = m + np.log(e.sum(axis=1, keepdims=True))
    terms = (t * (lse - u)).sum(axis=1)
    return terms, (1.0 / B) * penalty * (e / e.sum(axis=1, keepdims=True) - t)


def _step(params, moments, steps, views, X, T, act, hyper):
    weights, biases = views
    acts = [X]
    for l, (W, b) in enumerate(zip(weights, biases)):
        z = acts[-1] @ W + b
        acts.append(z if l == len(weights) - 1 else _activate(z, act))
    terms, d = _loss_and_dz(acts[-1], T, hyper[PENALTY])
    grads = []
    for l in range(len(weights) - 1, -1, -1):
        dW = acts[l].T @ d
        if hyper[L2] != 0.0:
            dW = dW + hyper[L2] * weights[l]
        grads.append((dW, d.sum(axis=0)))
        if l > 0:
            d = _activate_backward(d @ weights[l].T, acts[l], act)
    grad = np.concatenate([g.ravel() for pair in reversed(grads) for g in pair])
    steps[0] += 1
    if hyper[OPTIMIZER] == ADAM:
        # as span._coefficients and _step_range: bias corrections in float64, the step in the dtype
        b1, b2, t = hyper[BETA1], hyper[BETA2], int(steps[0])
        m, v = moments
        m[:] = b1 * m + (1 - b1) * grad
        v[:] = b2 * v + (1 - b2) * grad * grad
        size = params.dtype.type(hyper[LR] / (1.0 - float(b1) ** t))
        inv_root = params.dtype.type(1.0 / np.sqrt(1.0 - float(b2) ** t))
        params -= size * m / (np.sqrt(v) * inv_root + hyper[EPS])
    elif hyper[MOMENTUM] == 0.0:
        params -= hyper[LR] * grad
    else:
        velocity = moments[0]
        velocity[:] = hyper[MOMENTUM] * velocity - hyper[LR] * grad
        params += velocity
    return terms


def train_span(params, moments, steps, rng, losses, X, T, sizes, act, hyper, work, grad, order, cancel, done,
               binary):
    """Same contract as ``kernels.span.train_span`` (``work``, ``grad`` and ``binary`` unused: T's
    width says which loss); ``cancel`` is read before every step."""
    n = X.shape[0]
    B = int(min(n, max(1, hyper[BATCH_SIZE])))
    weights, biases = [], []
    for l, (I, O) in enumerate(zip(sizes[:-1], sizes[1:])):
        off = layer_offset(sizes, l)
        weights.append(params[off:off + I * O].reshape(I, O))
        biases.append(params[off + I * O:off + I * O + O])
    views = (weights, biases)
    for e in range(losses.shape[0]):
        total = 0.5 * hyper[L2] * sum((W * W).sum() for W in weights) if hyper[L2] != 0.0 else 0.0
        if B == n:
            if cancel[0]:
                return
            total += (_step(params, moments, steps, views, X, T, act, hyper) / n).sum()
        else:
            for i in range(n - 1, 0, -1):
                j = _next_u64(rng) % (i + 1)
                order[i], order[j] = order[j], order[i]
            for start in range(0, n, B):
                if cancel[0]:
                    return
                rows = order[start:start + B]
                total += (_step(params, moments, steps, views, X[rows], T[rows], act, hyper) / n).sum()
        losses[e] = total
        done[0] += 1
