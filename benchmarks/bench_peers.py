"""Peers on the seed workload, same network, same plain gradient descent (lr ``LR``, momentum 0),
same epochs, in the same run (PERFORMANCE.md): fastffnn at N = 8; the report's numpy loop serially
and in 8 threads; scikit-learn's MLPClassifier; PyTorch, one network and 8 batched with ``bmm``;
JAX, ``vmap`` over a jitted ``lax.fori_loop``.  PyTorch and JAX are optional and skipped when not
installed.  numpy and scikit-learn run with BLAS pinned to one thread, as PERFORMANCE.md measured
them; PyTorch and JAX use every core."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from .common import CORES, LR, PEER_INSTANCES, check_result, check_then_time, describe, time_train, workload


def _describe(benchmark, wl, roofline, timed, label: str, instances: int, **settings) -> None:
    describe(benchmark, wl, roofline, timed, area="peers", backend=label.split()[0], instances=instances,
             label=label, peer=True, **settings)


@pytest.mark.parametrize("backend", ["threads", "prange"])
def test_fastffnn(benchmark, timed, roofline, backend):
    wl = workload("seed", timed)
    describe(benchmark, wl, roofline, timed, area="peers", backend=backend, kernel="numba",
             instances=PEER_INSTANCES, workers=min(CORES, PEER_INSTANCES))
    time_train(benchmark, wl, timed, instances=PEER_INSTANCES, backend=backend)


@pytest.mark.parametrize("backend, instances", [("serial", 1), ("threads", PEER_INSTANCES)])
def test_numpy(benchmark, timed, roofline, backend, instances):
    wl = workload("seed", timed)
    _describe(benchmark, wl, roofline, timed, f"numpy {backend}", instances, blas_threads=1,
              workers=min(CORES, instances))
    with threadpool_limits(1):
        time_train(benchmark, wl, timed, instances=instances, backend=backend, kernel="numpy")


def test_sklearn(benchmark, timed, roofline):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    wl = workload("seed", timed)

    def fit(epochs: int):
        # full batch, constant lr, no momentum or L2; tol must be >= 0, so n_iter_no_change keeps
        # early stopping away instead
        clf = MLPClassifier(hidden_layer_sizes=wl.hidden, activation="relu", solver="sgd", batch_size=wl.n,
                            learning_rate="constant", learning_rate_init=LR, momentum=0.0,
                            nesterovs_momentum=False, alpha=0.0, max_iter=epochs, tol=0.0,
                            n_iter_no_change=epochs + 1, shuffle=False, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(wl.X, wl.y)
        assert clf.n_iter_ == epochs
        return np.array([clf.loss_curve_]), clf.predict(wl.X)

    _describe(benchmark, wl, roofline, timed, "sklearn MLPClassifier", 1, blas_threads=1)
    with threadpool_limits(1):
        check_then_time(benchmark, timed, lambda: check_result(wl, *fit(wl.check_epochs)),
                        lambda: fit(wl.epochs))


def _he_init(wl, instances: int) -> list:
    """[(W (N, I, O), b (N, O)), ...]: He-normal weights, zero biases, seeded."""
    rng = np.random.default_rng(0)
    return [(rng.normal(0.0, np.sqrt(2.0 / i), (instances, i, o)), np.zeros((instances, o)))
            for i, o in zip(wl.sizes[:-1], wl.sizes[1:])]


def _predict(wl, layers: list) -> np.ndarray:
    """Labels of instance 0 for ``wl.X``, from numpy (W, b) arrays with a leading instance axis."""
    h = wl.X
    for W, b in layers[:-1]:
        h = np.maximum(h @ W[0] + b[0], 0.0)
    W, b = layers[-1]
    return (h @ W[0] + b[0] > 0.0).astype(wl.y.dtype)[:, 0]


@pytest.mark.parametrize("instances", [1, PEER_INSTANCES], ids=lambda n: f"instances-{n}")
def test_torch(benchmark, timed, roofline, instances):
    torch = pytest.importorskip("torch")
    from torch.nn.functional import binary_cross_entropy_with_logits
    wl = workload("seed", timed)
    torch.set_num_threads(CORES)
    X = torch.from_numpy(wl.X)
    T = torch.from_numpy(wl.y.astype(np.float64))[:, None]
    batched = instances > 1

    def train(epochs: int):
        # autograd, and the instance axis batched by bmm: the usual PyTorch way to train an ensemble
        layers = [(torch.from_numpy(W if batched else W[0]).requires_grad_(),
                   torch.from_numpy(b[:, None, :] if batched else b[0]).requires_grad_())
                  for W, b in _he_init(wl, instances)]
        params = [p for layer in layers for p in layer]
        Xb, Tb = (X.expand(instances, *X.shape), T.expand(instances, *T.shape)) if batched else (X, T)
        losses = torch.empty(epochs, instances, dtype=torch.float64)
        for e in range(epochs):
            h = Xb
            for k, (W, b) in enumerate(layers):
                h = torch.baddbmm(b, h, W) if batched else torch.addmm(b, h, W)
                if k < len(layers) - 1:
                    h = torch.relu(h)
            loss = binary_cross_entropy_with_logits(h, Tb, reduction="none").mean(dim=(-2, -1))
            grads = torch.autograd.grad(loss.sum(), params)     # the sum: each instance its own mean
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(LR * g)
            losses[e] = loss.detach()
        trained = [(W.detach().numpy().reshape(instances, *W.shape[-2:]),
                    b.detach().numpy().reshape(instances, -1)) for W, b in layers]
        return losses.T.numpy(), _predict(wl, trained)

    _describe(benchmark, wl, roofline, timed, "torch bmm" if batched else "torch", instances,
              torch_threads=CORES, torch_version=torch.__version__)
    check_then_time(benchmark, timed, lambda: check_result(wl, *train(wl.check_epochs)),
                    lambda: train(wl.epochs))


def test_jax(benchmark, timed, roofline):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)       # float64, as the seed workload; JAX only
    import jax.numpy as jnp

    wl = workload("seed", timed)
    instances = PEER_INSTANCES
    X, T = jnp.asarray(wl.X), jnp.asarray(wl.y, dtype=jnp.float64)[:, None]

    def loss(layers):
        h = X
        for W, b in layers[:-1]:
            h = jax.nn.relu(h @ W + b)
        W, b = layers[-1]
        z = h @ W + b
        return jnp.mean(jax.nn.softplus(z) - T * z)     # binary cross-entropy of the logits z

    def step(_, carry):
        layers, _ = carry
        value, grads = jax.value_and_grad(loss)(layers)
        return jax.tree_util.tree_map(lambda p, g: p - LR * g, layers, grads), value

    @jax.jit
    def train_all(layers, epochs):
        # epochs is traced, so the check run compiles what the timed run calls
        return jax.vmap(lambda one: jax.lax.fori_loop(0, epochs, step, (one, jnp.zeros(()))))(layers)

    def train(epochs: int):
        layers, last = jax.block_until_ready(train_all(_he_init(wl, instances), epochs))
        return np.asarray(last)[:, None], _predict(wl, [(np.asarray(W), np.asarray(b)) for W, b in layers])

    _describe(benchmark, wl, roofline, timed, "jax vmap", instances, jax_version=jax.__version__)
    check_then_time(benchmark, timed, lambda: check_result(wl, *train(wl.check_epochs)),
                    lambda: train(wl.epochs))
