"""Peers on every workload of PERFORMANCE.md (seed, seed-f32, seed-mb32, wide, wide-f32), same network,
same plain gradient descent (lr ``LR``, momentum 0), same batches and epochs, in the same run: fastffnn
at N = 8 (threads on every workload, prange on seed); PyTorch, 8 networks batched with ``bmm``, and
JAX, ``vmap`` over a jitted ``lax.fori_loop``, on every workload; on seed also the report's numpy loop
serially and in 8 threads, scikit-learn's MLPClassifier and PyTorch with one network.  PyTorch and
JAX are optional and skipped when not installed.  numpy and scikit-learn run with BLAS pinned to one
thread, as PERFORMANCE.md measured them; PyTorch and JAX use every core.  The report gives every
fastffnn row its ratio to the best peer of the workload."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from .common import CORES, LR, PEER_INSTANCES, check_result, check_then_time, describe, time_train, workload

WORKLOADS = ("seed", "seed-f32", "seed-mb32", "wide", "wide-f32")


def _rounds(wl) -> int | None:
    # a timed wide run takes seconds: a few single rounds rather than pytest-benchmark's calibration
    return 3 if wl.name.startswith("wide") else None


def _describe(benchmark, wl, roofline, timed, label: str, instances: int, **settings) -> None:
    describe(benchmark, wl, roofline, timed, area="peers", backend=label.split()[0], instances=instances,
             label=label, peer=True, **settings)


@pytest.mark.parametrize("name, backend", [(name, "threads") for name in WORKLOADS] + [("seed", "prange")])
def test_fastffnn(benchmark, timed, roofline, name, backend):
    wl = workload(name, timed)
    describe(benchmark, wl, roofline, timed, area="peers", backend=backend, kernel="numba",
             instances=PEER_INSTANCES, workers=min(CORES, PEER_INSTANCES))
    time_train(benchmark, wl, timed, _rounds(wl), instances=PEER_INSTANCES, backend=backend)


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
    """[(W (N, I, O), b (N, O)), ...]: He-normal weights, zero biases, seeded, in the workload's dtype."""
    rng = np.random.default_rng(0)
    return [(rng.normal(0.0, np.sqrt(2.0 / i), (instances, i, o)).astype(wl.dtype), np.zeros((instances, o), wl.dtype))
            for i, o in zip(wl.sizes[:-1], wl.sizes[1:])]


def _predict(wl, layers: list) -> np.ndarray:
    """Labels of instance 0 for ``wl.X``, from numpy (W, b) arrays with a leading instance axis."""
    h = wl.X
    for W, b in layers[:-1]:
        h = np.maximum(h @ W[0] + b[0], 0.0)
    W, b = layers[-1]
    return (h @ W[0] + b[0] > 0.0).astype(wl.y.dtype)[:, 0]


@pytest.mark.parametrize("name, instances", [("seed", 1)] + [(name, PEER_INSTANCES) for name in WORKLOADS])
def test_torch(benchmark, timed, roofline, name, instances):
    torch = pytest.importorskip("torch")
    from torch.nn.functional import binary_cross_entropy_with_logits
    wl = workload(name, timed)
    torch.set_num_threads(CORES)
    X = torch.from_numpy(wl.X.astype(wl.dtype))
    T = torch.from_numpy(wl.y.astype(wl.dtype))[:, None]
    batched = instances > 1
    B = wl.batch_size or wl.n
    generator = torch.Generator().manual_seed(0)

    def train(epochs: int):
        # autograd, and the instance axis batched by bmm: the usual PyTorch way to train an ensemble;
        # mini-batches of a fresh permutation every epoch, the last one smaller, as fastffnn's
        layers = [(torch.from_numpy(W if batched else W[0]).requires_grad_(),
                   torch.from_numpy(b[:, None, :] if batched else b[0]).requires_grad_())
                  for W, b in _he_init(wl, instances)]
        params = [p for layer in layers for p in layer]
        losses = torch.empty(epochs, instances, dtype=X.dtype)
        for e in range(epochs):
            order = torch.randperm(wl.n, generator=generator) if B < wl.n else None
            for start in range(0, wl.n, B):
                Xs, Ts = (X, T) if order is None else (X[order[start:start + B]], T[order[start:start + B]])
                h, Tb = (Xs.expand(instances, *Xs.shape), Ts.expand(instances, *Ts.shape)) if batched else (Xs, Ts)
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
                    lambda: train(wl.epochs), _rounds(wl))


@pytest.mark.parametrize("name", WORKLOADS)
def test_jax(benchmark, timed, roofline, name):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)       # float64 where the workload says so; JAX only
    import jax.numpy as jnp

    wl = workload(name, timed)
    instances = PEER_INSTANCES
    X, T = jnp.asarray(wl.X, dtype=wl.dtype), jnp.asarray(wl.y, dtype=wl.dtype)[:, None]
    B = wl.batch_size or wl.n
    full, rest = divmod(wl.n, B)

    def loss(layers, Xb, Tb):
        h = Xb
        for W, b in layers[:-1]:
            h = jax.nn.relu(h @ W + b)
        W, b = layers[-1]
        z = h @ W + b
        return jnp.mean(jax.nn.softplus(z) - Tb * z)     # binary cross-entropy of the logits z

    def update(layers, Xb, Tb):
        value, grads = jax.value_and_grad(loss)(layers, Xb, Tb)
        return jax.tree_util.tree_map(lambda p, g: p - LR * g, layers, grads), value

    def epoch(e, carry):
        # the full batch, or mini-batches of a fresh permutation (the last one smaller), as fastffnn's
        layers, value = carry
        if B == wl.n:
            return update(layers, X, T)
        order = jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(0), e), wl.n)
        Xp, Tp = X[order], T[order]

        def batch(i, carry):
            rows = (jax.lax.dynamic_slice_in_dim(Xp, i * B, B), jax.lax.dynamic_slice_in_dim(Tp, i * B, B))
            return update(carry[0], *rows)

        layers, value = jax.lax.fori_loop(0, full, batch, (layers, value))
        return update(layers, Xp[full * B:], Tp[full * B:]) if rest else (layers, value)

    @jax.jit
    def train_all(layers, epochs):
        # epochs is traced, so the check run compiles what the timed run calls
        return jax.vmap(lambda one: jax.lax.fori_loop(0, epochs, epoch, (one, jnp.zeros((), X.dtype))))(layers)

    def train(epochs: int):
        layers, last = jax.block_until_ready(train_all(_he_init(wl, instances), epochs))
        return np.asarray(last)[:, None], _predict(wl, [(np.asarray(W), np.asarray(b)) for W, b in layers])

    _describe(benchmark, wl, roofline, timed, "jax vmap", instances, jax_version=jax.__version__)
    check_then_time(benchmark, timed, lambda: check_result(wl, *train(wl.check_epochs)),
                    lambda: train(wl.epochs), _rounds(wl))
