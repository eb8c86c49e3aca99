"""Per-layer kernels: one forward/backward pair per pass.

Dimensions: B = samples in the batch, I = fan_in, O = fan_out.
Argument order follows llm.c: outputs first, then inputs and weights.
Backward kernels *accumulate* into weight/bias gradients (cleared once per step
by ``zero_grad``) and *overwrite* the input gradient.
"""
import math


from .config import LEAKY_RELU, LEAKY_SLOPE, RELU, SIGMOID, TANH, jit


@jit
def zero_grad(grad):
    # grad (P,) overwritten with zeros
    for p in range(grad.shape[0]):
        grad[p] = 0.0


@jit
def dense_forward(out, inp, weight, bias):
    # out (B, O) overwritten; inp (B, I); weight (I, O); bias (O,)
    # i-outer / j-inner: the inner loop runs over contiguous rows of `weight` and `out`.
    B, I = inp.shape
    O = weight.shape[1]
    for b in range(B):
        for j in range(O):
            out[b, j] = bias[j]
        for i in range(I):
            a = inp[b, i]
            for j in range(O):
                out[b, j] += a * weight[i, j]


@jit
def dense_backward(dinp, dweight, dbias, dout, inp, weight):
    # dinp (B, I) overwritten, or (0, I) to skip (the first layer needs no input gradient)
    # dweight (I, O) += inp^T @ dout; dbias (O,) += column sums of dout
    # dout (B, O); inp (B, I); weight (I, O)
    B, I = inp.shape
    O = weight.shape[1]
    need_dinp = dinp.shape[0] > 0
    for b in range(B):
        for j in range(O):
            dbias[j] += dout[b, j]
        for i in range(I):
            a = inp[b, i]
            s = 0.0
            for j in range(O):
                d = dout[b, j]
                dweight[i, j] += a * d
                s += d * weight[i, j]
            if need_dinp:
                dinp[b, i] = s


@jit
def activation_forward(z, act):
    # z (B, O) pre-activations, replaced in place by the activations
    B, O = z.shape
    if act == RELU:
        for b in range(B):
            for j in range(O):
                if z[b, j] < 0.0:
                    z[b, j] = 0.0
    elif act == LEAKY_RELU:
        for b in range(B):
            for j in range(O):
                if z[b, j] < 0.0:
                    z[b, j] *= LEAKY_SLOPE
    elif act == TANH:
        for b in range(B):
            for j in range(O):
                z[b, j] = math.tanh(z[b, j])
    elif act == SIGMOID:
        for b in range(B):
            for j in range(O):
                z[b, j] = _sigmoid(z[b, j])


@jit
def activation_backward(d, a, act):
    # d (B, O): gradient w.r.t. the activation, turned in place into the gradient w.r.t.
    # the pre-activation; a (B, O): the activation (every derivative here is a function of it)
    B, O = d.shape
    if act == RELU:
        for b in range(B):
            for j in range(O):
                if a[b, j] <= 0.0:
                    d[b, j] = 0.0
    elif act == LEAKY_RELU:
        for b in range(B):
            for j in range(O):
                if a[b, j] <= 0.0:
                    d[b, j] *= LEAKY_SLOPE
    elif act == TANH:
        for b in range(B):
            for j in range(O):
                d[b, j] *= 1.0 - a[b, j] * a[b, j]
    elif act == SIGMOID:
        for b in range(B):
            for j in range(O):
                d[b, j] *= a[b, j] * (1.0 - a[b, j])


@jit
def _sigmoid(x):
    # stable for any x: exp of a non-positive number only
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@jit
def _softplus(x):
    # log(1 + exp(x)), stable for any x
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


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


