"""``python -m fastffnn``: train N instances on the embedded breast-cancer data and report accuracy."""
from __future__ import annotations

import argparse

from . import datasets, train
from .backends import BACKENDS
from .driver import KERNELS
from .hyperparams import HyperParams
from .sync import STRATEGIES


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastffnn", description=__doc__)
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--backend", choices=list(BACKENDS), default="threads")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--kernel", choices=list(KERNELS), default="numba")
    parser.add_argument("--sync", choices=STRATEGIES, default="none")
    parser.add_argument("--sync-every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=HyperParams.lr)
    parser.add_argument("--penalty", type=float, default=HyperParams.penalty, help="the report's ∂ (case 3)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    X_train, X_test, y_train, y_test = datasets.breast_cancer(test_size=0.2, seed=args.seed)
    result = train(X_train, y_train, instances=args.instances, epochs=args.epochs, backend=args.backend,
                   workers=args.workers, kernel=args.kernel, sync=args.sync, sync_every=args.sync_every,
                   hyperparams=HyperParams(lr=args.lr, penalty=args.penalty), dtype=args.dtype,
                   seed=args.seed, progress=args.progress)
    print(f"breast cancer: {X_train.shape[0]} train / {X_test.shape[0]} test samples, "
          f"{args.instances} instances, {args.epochs} epochs, backend={args.backend}, sync={args.sync}")
    for k, instance in enumerate(result.ensemble):
        print(f"  instance {k}: final loss {result.history.losses[k, -1]:.4f}  "
              f"test accuracy {instance.score(X_test, y_test):.4f}")
    print(f"  ensemble:   test accuracy {result.ensemble.score(X_test, y_test):.4f}")
    epochs_per_s = args.instances * args.epochs / result.timing.wall
    print(f"wall {result.timing.wall:.3f} s ({epochs_per_s:,.0f} instance-epochs/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
