"""Slow, obvious references for every kernel in ``fastffnn.kernels``, in plain numpy and Python loops.

Nothing here is optimised or clever: each function is the textbook formula, written so that it can
be checked by eye.  The kernels are tested against these (``tests/test_kernels.py``), and the
tolerances of those comparisons live here, in one place (``TOLERANCES``, one dict per dtype).

Dimensions: B = samples in a batch, I = fan_in, O = fan_out, K = outputs (1 for binary),
N = instances, C = columns, P = parameters of one network, sizes = (F, hidden..., K).
Every function returns new float64 arrays and changes none of its arguments.
"""
import numpy as np

from fastffnn.kernels import config

# --------------------------------------------------------------------------------------------
# Tolerances, one dict per dtype; each entry is (rtol, atol) for numpy.testing.assert_allclose.
#   kernel: a kernel against its naive reference (same inputs, rounding and summation order differ)
#   fd:     an analytic gradient against a central finite difference, always computed in float64
#           (so float32's entry is just its kernel tolerance: float32 kernel vs float64 result)
#   span:   one training kernel against another (numpy vs numba) after many epochs
#   run:    a whole training run in this dtype against the same run in float64 (float32 only)
# --------------------------------------------------------------------------------------------
TOLERANCES = {
    np.dtype(np.float64): {
        "kernel": (1e-10, 1e-12),
        "fd": (1e-6, 1e-7),     # central differences of O(10) losses lose ~1e-8 to rounding
        "span": (1e-10, 1e-12),
        "run": (1e-10, 1e-12),  # (unused: float64 is the reference run)
    },
    np.dtype(np.float32): {
        "kernel": (2e-4, 2e-5),
        "fd": (2e-4, 2e-5),
        "span": (1e-4, 1e-5),
        "run": (2e-2, 2e-3),
    },
}
FD_STEP = 1e-6      # central-difference step, for float64 evaluations


def tol(dtype, what="kernel") -> dict:
    """``dict(rtol=..., atol=...)`` for comparing results of ``dtype`` (see ``TOLERANCES``)."""
    rtol, atol = TOLERANCES[np.dtype(dtype)][what]
    return {"rtol": rtol, "atol": atol}


def assert_close(actual, desired, dtype, what="kernel", msg=""):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64),
                               err_msg=msg, **tol(dtype, what))


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------
# hidden activations, and "identity" (the output layer's, which leaves the logits as they are)
HIDDEN_ACTIVATIONS = {"relu": config.RELU, "leaky_relu": config.LEAKY_RELU, "tanh": config.TANH,
                      "sigmoid": config.SIGMOID}
ACTIVATION_CODES = {**HIDDEN_ACTIVATIONS, "identity": config.IDENTITY}


def matmul(A, Bm):
    """(R, C) = A (R, K) @ Bm (K, C), by the textbook triple loop."""
    R, K = A.shape
    C = Bm.shape[1]
    out = np.zeros((R, C))
    for r in range(R):
        for c in range(C):
            for k in range(K):
                out[r, c] += float(A[r, k]) * float(Bm[k, c])
    return out


def dense_forward(inp, weight, bias):
    """out (B, O): out[b, j] = bias[j] + sum_i inp[b, i] * weight[i, j]."""
    B, I = inp.shape
    O = weight.shape[1]
    out = np.zeros((B, O))
    for b in range(B):
        for j in range(O):
            s = float(bias[j])
            for i in range(I):
                s += float(inp[b, i]) * float(weight[i, j])
            out[b, j] = s
    return out


def dense_backward(dout, inp, weight):
    """(dinp (B, I), dweight (I, O), dbias (O,)) of out = inp @ weight + bias, given dout (B, O).
    dinp is the gradient w.r.t. inp itself; chain ``activation_backward`` for the gradient w.r.t.
    the previous layer's pre-activation."""
    B, I = inp.shape
    O = weight.shape[1]
    dinp, dweight, dbias = np.zeros((B, I)), np.zeros((I, O)), np.zeros(O)
    for b in range(B):
        for i in range(I):
            for j in range(O):
                dinp[b, i] += float(dout[b, j]) * float(weight[i, j])
                dweight[i, j] += float(inp[b, i]) * float(dout[b, j])
    for j in range(O):
        for b in range(B):
            dbias[j] += float(dout[b, j])
    return dinp, dweight, dbias


# the same functions on whole arrays, for the network-level references (the finite differences
# call them thousands of times; elementwise loops would dominate the test time)
ARRAY_ACTIVATIONS = {
    "identity": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0.0, z, config.LEAKY_SLOPE * z),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
}


def _scalar_activation(x, name):
    if name == "identity":
        return x
    if name == "relu":
        return x if x > 0.0 else 0.0
    if name == "leaky_relu":
        return x if x > 0.0 else config.LEAKY_SLOPE * x
    if name == "tanh":
        return np.tanh(x)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    raise ValueError(name)


def _scalar_derivative(x, name):
    # derivative with respect to the pre-activation x; at the kink of relu / leaky_relu (x = 0)
    # the left derivative, which is what the kernels use (they test activation <= 0)
    if name == "identity":
        return 1.0
    if name == "relu":
        return 1.0 if x > 0.0 else 0.0
    if name == "leaky_relu":
        return 1.0 if x > 0.0 else config.LEAKY_SLOPE
    if name == "tanh":
        return 1.0 - np.tanh(x) ** 2
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-x))
        return s * (1.0 - s)
    raise ValueError(name)


def activation_forward(z, name):
    """f(z) elementwise, z (B, O) pre-activations."""
    z = np.asarray(z, dtype=np.float64)
    return np.array([[_scalar_activation(x, name) for x in row] for row in z]).reshape(z.shape)


def activation_backward(d, z, name):
    """d * f'(z) elementwise: the gradient w.r.t. the pre-activation z (B, O), given d = dloss/df(z)."""
    z = np.asarray(z, dtype=np.float64)
    deriv = np.array([[_scalar_derivative(x, name) for x in row] for row in z]).reshape(z.shape)
    return np.asarray(d, dtype=np.float64) * deriv


# --------------------------------------------------------------------------------------------
# Outputs: sigmoid (K = 1) and softmax (K > 1) cross-entropy, both of the scaled logits penalty * z
# --------------------------------------------------------------------------------------------
def sigmoid(x):
    """1 / (1 + exp(-x)), written with exp of a non-positive number only so that the reference
    itself stays finite (and warning-free) for logits like 1e4."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax_rows(u):
    u = np.asarray(u, dtype=np.float64)
    e = np.exp(u - u.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid_xent_report(z, target, penalty=1.0):
    """The 2020 report's formulation: yhat = sigmoid(penalty z), then
    -(y log(yhat) + (1 - y) log(1 - yhat)).  Correct maths, but overflows to Inf/NaN for large
    logits (yhat rounds to exactly 0 or 1).  Returns (B,)."""
    y = np.asarray(target, dtype=np.float64)[:, 0]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        yhat = 1.0 / (1.0 + np.exp(-penalty * np.asarray(z, dtype=np.float64)[:, 0]))
        return -(y * np.log(yhat) + (1.0 - y) * np.log(1.0 - yhat))


def sigmoid_xent_forward(z, target, penalty=1.0):
    """Exact per-sample loss (B,) of sigmoid(penalty z): log(1 + exp(u)) - y u, u = penalty z,
    with numpy's log-add-exp for log(1 + exp(u)) = log(exp(0) + exp(u))."""
    u = penalty * np.asarray(z, dtype=np.float64)[:, 0]
    y = np.asarray(target, dtype=np.float64)[:, 0]
    return np.logaddexp(0.0, u) - y * u


def sigmoid_xent_backward(z, target, penalty=1.0, scale=1.0):
    """dz (B, 1) = scale * d loss_b / d z_b = scale * penalty * (sigmoid(penalty z) - y)."""
    z = np.asarray(z, dtype=np.float64)
    return scale * penalty * (sigmoid(penalty * z) - np.asarray(target, dtype=np.float64))


def softmax_xent_forward(z, target, penalty=1.0):
    """Per-sample loss (B,): -sum_k t_k log(softmax(penalty z)_k), by loops."""
    u = penalty * np.asarray(z, dtype=np.float64)
    B, K = u.shape
    loss = np.zeros(B)
    for b in range(B):
        m = max(u[b])
        lse = m + np.log(sum(np.exp(u[b, k] - m) for k in range(K)))
        for k in range(K):
            loss[b] -= float(target[b, k]) * (u[b, k] - lse)
    return loss


def softmax_xent_backward(z, target, penalty=1.0, scale=1.0):
    """dz (B, K) = scale * penalty * (softmax(penalty z) - t)."""
    return scale * penalty * (softmax_rows(penalty * np.asarray(z, dtype=np.float64))
                              - np.asarray(target, dtype=np.float64))


def output_proba(z, penalty=1.0):
    """(B, K): sigmoid(penalty z) for K = 1, softmax(penalty z) for K > 1."""
    z = np.asarray(z, dtype=np.float64)
    return sigmoid(penalty * z) if z.shape[1] == 1 else softmax_rows(penalty * z)


def xent_forward(z, target, penalty=1.0):
    return (sigmoid_xent_forward if z.shape[1] == 1 else softmax_xent_forward)(z, target, penalty)


# --------------------------------------------------------------------------------------------
# Reduction
# --------------------------------------------------------------------------------------------
def combine_rows(rows, weights):
    """(C,): sum_k weights[k] * rows[k, :]."""
    N, C = rows.shape
    out = np.zeros(C)
    for k in range(N):
        for c in range(C):
            out[c] += float(weights[k]) * float(rows[k, c])
    return out


# --------------------------------------------------------------------------------------------
# Whole network, as a function of one flat parameter vector (P,)
# layout: for each layer, W (fan_in, fan_out) row-major, then its bias (fan_out,)
# --------------------------------------------------------------------------------------------
def n_params(sizes):
    return sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))


def unpack(params, sizes):
    """Lists of per-layer weights (I, O) and biases (O,), as float64 copies."""
    params = np.asarray(params, dtype=np.float64)
    assert params.shape == (n_params(sizes),)
    weights, biases, off = [], [], 0
    for i, o in zip(sizes[:-1], sizes[1:]):
        weights.append(params[off:off + i * o].reshape(i, o).copy())
        biases.append(params[off + i * o:off + i * o + o].copy())
        off += i * o + o
    return weights, biases


def weight_mask(sizes):
    """(P,) 1.0 where the flat vector holds a weight, 0.0 where it holds a bias."""
    mask, off = np.zeros(n_params(sizes)), 0
    for i, o in zip(sizes[:-1], sizes[1:]):
        mask[off:off + i * o] = 1.0
        off += i * o + o
    return mask


def logits(params, X, sizes, activation):
    """(n, K) output logits; every hidden layer applies ``activation`` (a name)."""
    weights, biases = unpack(params, sizes)
    a = np.asarray(X, dtype=np.float64)
    for l, (W, b) in enumerate(zip(weights, biases)):
        z = a @ W + b
        a = z if l == len(weights) - 1 else ARRAY_ACTIVATIONS[activation](z)
    return a


def predict_proba(params, X, sizes, activation, penalty=1.0):
    return output_proba(logits(params, X, sizes, activation), penalty)


def loss(params, X, T, sizes, activation, penalty=1.0, l2=0.0):
    """Mean cross-entropy over the n samples plus 0.5 * l2 * (sum of squared weights, no biases)."""
    z = logits(params, X, sizes, activation)
    data = xent_forward(z, T, penalty).mean()
    weights, _ = unpack(params, sizes)
    return data + 0.5 * l2 * sum((W ** 2).sum() for W in weights)


def backprop_gradient(params, X, T, sizes, activation, penalty=1.0):
    """The gradient (P,) of ``loss``'s data term (no l2) by backpropagation on whole arrays: the
    finite differences' to their error, at a cost that allows batches of a thousand samples."""
    weights, biases = unpack(params, sizes)
    L, a, zs = len(weights), [np.asarray(X, dtype=np.float64)], []
    for l, (W, b) in enumerate(zip(weights, biases)):
        zs.append(a[-1] @ W + b)
        a.append(zs[-1] if l == L - 1 else ARRAY_ACTIVATIONS[activation](zs[-1]))
    backward = sigmoid_xent_backward if sizes[-1] == 1 else softmax_xent_backward
    d, parts = backward(zs[-1], T, penalty, 1.0 / len(a[0])), []
    for l in range(L - 1, -1, -1):
        if l < L - 1:
            d = activation_backward(d, zs[l], activation)
        parts[:0] = [(a[l].T @ d).ravel(), d.sum(axis=0)]
        d = d @ weights[l].T
    return np.concatenate(parts)


def fd_gradient(f, x, h=FD_STEP):
    """Central finite differences of the scalar function f at x (any shape), in float64."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2.0 * h)
    return g


def sgd_step(params, velocity, grad, sizes, lr, l2=0.0, momentum=0.0):
    """The update rule: g' = grad + l2 * W on weights only; momentum 0: p -= lr g';
    else v = mu v - lr g', p += v.  grad is the gradient of the data loss alone.
    Returns new (params, velocity)."""
    params = np.asarray(params, dtype=np.float64)
    velocity = np.asarray(velocity, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64) + l2 * weight_mask(sizes) * params
    if momentum == 0.0:
        return params - lr * g, velocity.copy()
    v = momentum * velocity - lr * g
    return params + v, v


def adam_step(params, m, v, t, grad, sizes, lr, l2=0.0, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam's step t = 1, 2, ... as Kingma & Ba (2015) write it (algorithm 1), on
    g = grad + l2 * W (weights only; grad is the gradient of the data loss alone):
        m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
        m_hat = m / (1 - beta1^t);     v_hat = v / (1 - beta2^t)
        p = p - lr m_hat / (sqrt(v_hat) + eps)
    Returns new (params, m, v)."""
    params = np.asarray(params, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64) + l2 * weight_mask(sizes) * params
    m = beta1 * np.asarray(m, dtype=np.float64) + (1.0 - beta1) * g
    v = beta2 * np.asarray(v, dtype=np.float64) + (1.0 - beta2) * g ** 2
    m_hat = m / (1.0 - beta1 ** t)
    v_hat = v / (1.0 - beta2 ** t)
    return params - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


# --------------------------------------------------------------------------------------------
# The span kernels' batch-order generator
# --------------------------------------------------------------------------------------------
def splitmix64(state):
    """(next state, output) of splitmix64 (Steele, Lea & Flood 2014), with Python integers."""
    mask = (1 << 64) - 1
    state = (state + 0x9E3779B97F4A7C15) & mask
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return state, z ^ (z >> 31)


def shuffle(order, state):
    """Fisher-Yates from the last position down, j = next output mod (i + 1).
    Returns (new order as a list, new state)."""
    order = list(order)
    for i in range(len(order) - 1, 0, -1):
        state, r = splitmix64(state)
        j = r % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order, state


def make_data(n=120, features=8, seed=0):
    """A small seeded binary problem: a random linear rule plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features))
    y = (X @ rng.normal(size=features) + 0.5 * rng.normal(size=n) > 0).astype(int)
    return X, y
