"""The ``fastffnn`` command (``python -m fastffnn`` is the same), a thin skin over the API:

    fastffnn train [options]        train N instances and summarise them (the main job)
    fastffnn plot RUN [options]     redraw every figure of a saved run
    fastffnn bench RESULTS.json     the scaling report of a benchmark run
    fastffnn report [--quick]       run the findings experiments and write REPORT.md

``train`` with no options trains 8 independent instances of the report's network on the embedded
breast-cancer data with the threads backend and predicts with their ensemble: the defaults that
REPORT.md found best in test accuracy.  Its
flags are ``train``'s parameters, checked by ``train`` itself; their choices come from the
registries.  A user error prints one line on stderr and exits with status 2 (``--debug`` adds the
traceback); a run that fails (an instance raised, a stall) exits with status 1.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import threading
import traceback
from pathlib import Path
from time import perf_counter

import numpy as np
from tqdm.auto import tqdm

from . import api, checkpoint, datasets, plots
from .backends import BACKENDS
from .driver import KERNELS
from .errors import FastFFNNError
from .hyperparams import FIELDS, HyperParams, vary
from .network import ACTIVATIONS, INITS
from .sync import STRATEGIES, SYNC_LAYERS

HYPERPARAMS = tuple(name for name in FIELDS if name != "seed")     # per-instance flags (--seed is the run's)
# train's parameters a resumed run may choose anew; the others are the run's own
RESUMABLE = ("backend", "workers", "ray_address", "timeout", "epochs")
OUTPUTS = ("validation", "progress", "snapshots", "checkpoint", "checkpoint_every")    # set by cmd_train
NOTICE_DELAY = 1.0                  # seconds into train before the compile notice


class UsageError(ValueError):
    """A bad command line or data file: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _default(name: str):
    return inspect.signature(api.train).parameters[name].default


def _values(convert, what: str):
    """An argparse type: one value, or a comma-separated list of them (one per instance)."""
    def parse(text: str):
        try:
            values = [convert(v.strip()) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} or a comma-separated list of them, got {text!r}")
        return values[0] if len(values) == 1 else values
    return parse


def _ints(text: str) -> tuple:
    value = _values(int, "an int")(text)
    return tuple(value) if isinstance(value, list) else (value,)


def _batch(text: str):
    return None if text == "full" else int(text)


def _timeout(text: str):
    try:
        return None if text.lower() == "none" else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'none', got {text!r}")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    run = p.add_argument_group("the run: fastffnn.train's parameters (defaults are train's unless said)")
    run.add_argument("--backend", choices=list(BACKENDS), help=f"where instances run (default {_default('backend')})")
    run.add_argument("--instances", type=int, help="N (default 8, or the length of a list below)")
    run.add_argument("--epochs", type=int, help=f"epochs per instance (default {_default('epochs')}; with "
                                                f"--resume, the total, by default the run's)")
    run.add_argument("--sync", choices=STRATEGIES, help=f"what instances exchange (default {_default('sync')}: "
                                                        f"REPORT.md found none better in test accuracy)")
    run.add_argument("--explore", action="store_true", default=None,
                     help="with --sync best: PBT's explore, copied hyperparameters perturbed by x0.8 or x1.2")
    run.add_argument("--sync-every", type=int, help=f"epochs between sync points (default {_default('sync_every')})")
    run.add_argument("--sync-layers", choices=SYNC_LAYERS, help=f"default {_default('sync_layers')}")
    run.add_argument("--init", choices=INITS, help=f"how instances start (default {_default('init')})")
    run.add_argument("--hidden", type=_ints, help=f"hidden widths, e.g. 64,32 (default "
                                                  f"{','.join(map(str, _default('hidden')))})")
    run.add_argument("--activation", choices=list(ACTIVATIONS), help=f"default {_default('activation')}")
    for name in HYPERPARAMS:
        convert, what = {"batch_size": (_batch, "an int or 'full'"), "optimizer": (str, "a name")}.get(
            name, (float, "a number"))
        run.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_values(convert, what),
                         help=f"one value, or one per instance (default {getattr(HyperParams, name) or 'full'})")
    run.add_argument("--dtype", choices=sorted(api.CONSTRAINTS["dtype"][0].options),
                     help=f"default {_default('dtype')}")
    run.add_argument("--seed", type=int, help=f"run seed, also of the train/test split (default {_default('seed')})")
    run.add_argument("--workers", type=int, help="threads, processes or Ray actors (default: cores, at most N)")
    run.add_argument("--ray-address", dest="ray_address", metavar="ADDRESS",
                     help="--backend ray: the cluster (default: $RAY_ADDRESS, else a local Ray)")
    run.add_argument("--timeout", type=_timeout,
                     help=f"stall watchdog seconds, or none (default {_default('timeout'):g})")
    run.add_argument("--kernel", choices=list(KERNELS), help=f"default {_default('kernel')}")


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data (default: the embedded breast-cancer data)")
    data.add_argument("--data", metavar="FILE", help="a .csv with a header row, or an .npz with arrays X and y")
    data.add_argument("--target", metavar="COLUMN", help="the label column of a .csv (the labels array of an .npz)")
    data.add_argument("--test-size", type=float, default=0.2, help="held-out fraction, stratified (default 0.2)")


def build_parser() -> Parser:
    parser = Parser(prog="fastffnn", description="Train many instances of a feed-forward network in parallel.",
                    epilog="The main job: fastffnn train (its options: fastffnn train --help).")
    commands = parser.add_subparsers(dest="command", metavar="{train,plot,bench,report}")
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")

    train = commands.add_parser("train", parents=[common], help="train N instances (the main job)",
                                description="Train N instances of a network in parallel, print a summary and "
                                            "draw the figures.")
    _add_run_flags(train)
    _add_data_flags(train)
    out = train.add_argument_group("outputs")
    out.add_argument("--plots-dir", default="Plots", help="folder of the figures (default Plots)")
    out.add_argument("--no-plots", action="store_true", help="draw no figures")
    out.add_argument("--snapshot-epochs", type=_ints, help="epochs whose weights the network figure draws "
                                                           "(default 0,<epochs/2>,<epochs>)")
    out.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    out.add_argument("--save", metavar="PATH", help="write the run to a checkpoint at the end")
    out.add_argument("--checkpoint-every", type=int, metavar="EPOCHS", help="also during the run (with --save)")
    out.add_argument("--resume", metavar="PATH", help="continue a saved run (give its data flags again)")
    out.add_argument("--quiet", action="store_true", help="no progress bar or compile notice")
    train.set_defaults(handler=cmd_train)

    plot = commands.add_parser("plot", parents=[common], help="redraw every figure of a saved run",
                               description="Redraw every figure of a saved run (a checkpoint).  The alignment "
                                           "figure needs the run's held-out data: give its data flags.")
    plot.add_argument("run", metavar="RUN", help="a checkpoint written by fastffnn train --save")
    plot.add_argument("--plots-dir", default="Plots", help="folder of the figures (default Plots)")
    plot.add_argument("--seed", type=int, help="seed of the train/test split (default: the run's)")
    _add_data_flags(plot)
    plot.set_defaults(handler=cmd_plot)

    report = commands.add_parser("report", parents=[common], help="run the findings experiments, write REPORT.md",
                                 description="Run the experiments that answer the 2020 report's questions and "
                                             "write REPORT.md with its figures in Plots/ (fastffnn.reports.findings).")
    report.add_argument("--quick", action="store_true", help="a small run that checks the command (under two "
                                                             "minutes; too small to conclude from)")
    report.add_argument("--out", default=".", help="folder of REPORT.md; the figures go to its Plots/ (default .)")
    report.add_argument("--json", metavar="PATH", help="also write every run's records as JSON")
    report.set_defaults(handler=cmd_report)

    bench = commands.add_parser("bench", add_help=False, help="print the scaling report of benchmark results")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="RESULTS.json [--plots DIR] [--no-plots]")
    return parser


# --- data -------------------------------------------------------------------------------------

def load_data(path, target, test_size: float, seed: int) -> tuple:
    """(description, X_train, X_test, y_train, y_test): the breast-cancer data, or a .csv/.npz
    file's, split (stratified) and standardised on the train part."""
    if path is None:
        return ("breast cancer (embedded)", *datasets.breast_cancer(test_size=test_size, seed=seed))
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--data {path}: no such file")
    readers = {".csv": _read_csv, ".npz": _read_npz}
    if path.suffix.lower() not in readers:
        raise UsageError(f"--data {path}: expected a .csv or .npz file")
    X, y = readers[path.suffix.lower()](path, target)
    return (f"{path.name} (target {target or 'y'!r})",
            *datasets.breast_cancer(test_size=test_size, seed=seed, X=X, y=y))


def _read_csv(path: Path, target: str | None) -> tuple:
    import csv
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise UsageError(f"--data {path}: expected a header row and data rows, found {len(rows)} row(s)")
    header = [name.strip() for name in rows[0]]
    if target not in header:
        given = "no --target" if target is None else f"--target {target!r} is not one of its columns"
        raise UsageError(f"--data {path}: {given}; its columns are {', '.join(map(repr, header))}")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UsageError(f"--data {path}, line {line}: {len(row)} fields, but the header has {len(header)}")
    cells = np.array([[cell.strip() for cell in row] for row in rows[1:]])
    t = header.index(target)
    features = [j for j in range(len(header)) if j != t]
    X = np.empty((len(cells), len(features)))
    for c, j in enumerate(features):
        try:
            X[:, c] = cells[:, j].astype(float)
        except ValueError:
            i = next(i for i, cell in enumerate(cells[:, j]) if not _is_number(cell))
            raise UsageError(f"--data {path}: column {header[j]!r} is not numeric (line {i + 2}: "
                             f"{str(cells[i, j])!r}); drop or encode it, only the --target column may hold text")
    return X, cells[:, t]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_npz(path: Path, target: str | None) -> tuple:
    labels = target or "y"
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "X" not in npz.files or labels not in npz.files:
                raise UsageError(f"--data {path}: expected arrays 'X' (samples, features) and {labels!r} (labels); "
                                 f"it holds {npz.files}")
            X, y = npz["X"], npz[labels]
    except UsageError:
        raise
    except (ValueError, OSError) as exc:
        raise UsageError(f"--data {path}: not a readable .npz of arrays ({exc})") from exc
    if X.dtype.kind not in "biuf":
        raise UsageError(f"--data {path}: X holds {X.dtype} values, not numbers")
    return X, y


# --- train ------------------------------------------------------------------------------------

def _given(args) -> dict:
    """``train``'s keyword arguments from the flags the user gave; hyperparameters through ``vary``."""
    names = [name for name in inspect.signature(api.train).parameters if hasattr(args, name) and name not in OUTPUTS]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if getattr(args, "explore", None):
        given["sync_options"] = {"explore": True}
    values = {name: getattr(args, name) for name in HYPERPARAMS if getattr(args, name) is not None}
    if any(isinstance(v, list) for v in values.values()):
        given["hyperparams"] = vary(**values)
    elif values:
        given["hyperparams"] = HyperParams(**values)
    return given


def _check_resumable(args, given: dict, saved, path: str) -> None:
    """Refuse flags that would change a resumed run's own settings (the same values are fine)."""
    changed = [name for name, value in given.items()
               if name not in (*RESUMABLE, "hyperparams") and value != saved.config.get(name)]
    for name in HYPERPARAMS:
        value = getattr(args, name)
        ran = [getattr(hp, name) for hp in saved.hyperparams]
        if value is not None and (value if isinstance(value, list) else [value] * len(ran)) != ran:
            changed.append(name)
    if changed:
        flags = ", ".join("--" + name.replace("_", "-") for name in changed)
        raise UsageError(f"--resume {path} continues the run with its own settings, and {flags} would change "
                         f"them; drop {'it' if len(changed) == 1 else 'them'}, or start a new run without --resume")


def cmd_train(args) -> int:
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise UsageError(f"--json {args.json}: its folder does not exist")
    given = _given(args)
    saved = checkpoint.load(args.resume) if args.resume else None
    if saved is not None:
        _check_resumable(args, given, saved, args.resume)
    config = saved.config if saved is not None else {}
    seed = given.get("seed", config.get("seed", _default("seed")))
    name, X, X_test, y, y_test = load_data(args.data, args.target, args.test_size, seed)
    epochs = given.get("epochs", saved.state.target_epochs if saved is not None else _default("epochs"))
    snapshots = list(args.snapshot_epochs or sorted({0, epochs // 2, epochs}))
    progress = not args.quiet and sys.stderr.isatty()
    dtype, kernel, backend, activation = (given.get(k, config.get(k, _default(k)))
                                          for k in ("dtype", "kernel", "backend", "activation"))
    notice = None if args.quiet else compile_notice(dtype, kernel, backend, activation, len(np.unique(y)) == 2)
    # said once train has validated everything (a bad argument fails within the delay, silently)
    # and is compiling; through tqdm, which redraws the bar below the line
    shown = threading.Event()

    def tell() -> None:
        tqdm.write(notice, file=sys.stderr)
        shown.set()
    timer = threading.Timer(NOTICE_DELAY, tell) if notice else None
    # --save alone writes at the end only: the first sync point `epochs` after the start is the last
    outputs = dict(validation=(X_test, y_test), progress=progress, snapshots=snapshots, checkpoint=args.save,
                   checkpoint_every=args.checkpoint_every or (epochs if args.save else None))
    t = perf_counter()
    if timer is not None:
        timer.start()
    try:
        if saved is None:
            result = api.train(X, y, **given, **outputs)
        else:
            result = api.resume(args.resume, X, y, **{k: v for k, v in given.items() if k in RESUMABLE}, **outputs)
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
    if shown.is_set():
        part = result.timing.wall - (saved.timing.wall if saved is not None else 0.0)
        print(f"kernels compiled in {perf_counter() - t - part:.0f} s", file=sys.stderr)
    drawn = None if args.no_plots else plots.draw(result, args.plots_dir, X=X_test, y=y_test)
    report = summary(result, name, X, X_test, y, y_test, drawn, args.save)
    print(format_summary(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def summary(result, name: str, X, X_test, y, y_test, drawn, saved_to) -> dict:
    """What ``fastffnn train`` prints, as a JSON-able dict (``--json``)."""
    losses, timing = result.history.losses, result.timing
    instances = [{"instance": k, **{f: getattr(hp, f) for f in HYPERPARAMS}, "final_loss": float(losses[k, -1]),
                  "train_accuracy": inst.score(X, y), "test_accuracy": inst.score(X_test, y_test),
                  "compute_s": float(timing.compute[k]), "barrier_wait_s": float(timing.barrier_wait[k])}
                 for k, (inst, hp) in enumerate(zip(result.ensemble, result.hyperparams))]
    return {"data": {"name": name, "train_samples": len(X), "test_samples": len(X_test), "features": X.shape[1]},
            "config": json.loads(checkpoint.canonical_json(result.config)),
            "sizes": list(result.ensemble.topology.sizes), "instances": instances,
            "ensemble": {"train_accuracy": result.ensemble.score(X, y),
                         "test_accuracy": result.ensemble.score(X_test, y_test)},
            "timing": {"wall_s": timing.wall, "compute_s": float(timing.compute.sum()),
                       "barrier_wait_s": float(timing.barrier_wait.sum()),
                       "instance_epochs_per_s": losses.size / timing.wall},
            "exploits": len(result.history.exploits),
            "figures": [] if drawn is None else [str(p) for p in drawn.paths],
            "skipped_figures": {} if drawn is None else drawn.skipped, "checkpoint": saved_to}


def figure_lines(paths, skipped: dict) -> list:
    return [f"figure: {p}" for p in paths] + [f"no {kind} figure: {why}" for kind, why in skipped.items()]


def format_summary(s: dict) -> str:
    from .reports.scaling import _format        # the project's one plain-text table
    c, d, t = s["config"], s["data"], s["timing"]
    layers = {"last": "the output layer", "all": "all layers"}[c["sync_layers"]]
    sync = "none" if c["sync"] == "none" else f"{c['sync']} of {layers} every {c['sync_every']} epochs"
    if c["sync_options"].get("explore"):
        sync += f" with PBT's explore ({s['exploits']} copies)"
    lines = [f"{d['name']}: {d['train_samples']} train / {d['test_samples']} test samples, {d['features']} features",
             f"{c['instances']} instances of {'-'.join(map(str, s['sizes']))} {c['activation']}, {c['epochs']} "
             f"epochs, backend={c['backend']} ({c['workers']} worker{'s' * (c['workers'] != 1)}), sync={sync}, "
             f"{c['dtype']}", ""]
    # Adam has no momentum: its betas stand in that column
    rows = [[i["instance"], i["optimizer"], f"{i['lr']:g}", f"{i['l2']:g}",
             f"{i['momentum']:g}" if i["optimizer"] == "sgd" else f"{i['beta1']:g}/{i['beta2']:g}",
             i["batch_size"] or "full", f"{i['penalty']:g}", f"{i['final_loss']:.4f}", f"{i['train_accuracy']:.4f}",
             f"{i['test_accuracy']:.4f}", f"{i['compute_s']:.3f}", f"{i['barrier_wait_s']:.3f}"] for i in s["instances"]]
    ensemble = s["ensemble"]
    rows.append(["ensemble", *[""] * 7, f"{ensemble['train_accuracy']:.4f}", f"{ensemble['test_accuracy']:.4f}", "", ""])
    lines.append(_format(["instance", "optimizer", "lr", "l2", "momentum/betas", "batch", "penalty", "final loss",
                          "train acc", "test acc", "compute s", "wait s"], rows, "rlrrrrrrrrrr"))
    lines.append(f"\nwall {t['wall_s']:.3f} s ({t['instance_epochs_per_s']:,.0f} instance-epochs/s); summed over "
                 f"instances: compute {t['compute_s']:.3f} s, barrier wait {t['barrier_wait_s']:.3f} s")
    lines += figure_lines(s["figures"], s["skipped_figures"])
    if s["checkpoint"]:
        lines.append(f"checkpoint: {s['checkpoint']}")
    return "\n".join(lines)


def cold_kernels(dtype: str, kernel: str, backend: str, activation: str = "relu", binary: bool = True) -> list | None:
    """(name, seconds) of each Numba kernel a run will compile rather than load from Numba's
    on-disk cache, or None when the cache cannot be read this way (a Numba whose cache internals
    differ).  The seconds are what a cold compile took on one core of the README's machine.  The
    kernels that take an activation, and whether the output is one sigmoid (``binary``: two
    classes), are compiled for each apart (literals)."""
    import numba
    from numba import types
    from numba.core.registry import cpu_target
    from .kernels import gemm, reduce, span
    from .kernels.config import TolerantCache
    trainer = {"numba": (span.train_span, 9), "numba-gil": (span.train_span_gil, 2)}.get(kernel)
    needed = [(span.train_spans_parallel, 12) if backend == "prange" else trainer,
              (span.predict_proba, 1), (reduce.combine_rows, 1)]
    # the caches to read: each kernel's, and the native gemm's that they all call (a C callback)
    caches = [(gemm.gemm_native.__name__, TolerantCache(gemm.gemm_native), 2)] + [
        (dispatcher.py_func.__name__, dispatcher._cache, seconds) for dispatcher, seconds in filter(None, needed)]
    want, act = numba.from_dtype(np.dtype(dtype)), ACTIVATIONS[activation]
    codegen = cpu_target.target_context.codegen()

    def serves(args) -> bool:
        # this dtype, and this activation and output wherever the kernel takes them
        return args[0].dtype == want and all(a.literal_value == (binary if isinstance(a, types.BooleanLiteral) else act)
                                             for a in args if isinstance(a, types.Literal))

    try:
        cold = []
        for name, cache, seconds in caches:
            index = cache._cache_file._load_index() if hasattr(cache, "_cache_file") else {}   # none: not cached
            # an entry for the run, compiled from this source for this CPU (a kernel's key holds
            # its argument types, the C callback's its signature)
            if not any(key == cache._index_key(key[0], codegen) and serves(getattr(key[0], "args", key[0]))
                       for key in index):
                cold.append((name, seconds))
        return cold
    except Exception:
        return None


def compile_notice(dtype: str, kernel: str, backend: str, activation: str = "relu", binary: bool = True) -> str | None:
    """What to say before a run whose kernels must compile first (None: nothing to compile)."""
    cold = cold_kernels(dtype, kernel, backend, activation, binary)
    if not cold:
        return None
    note = "Numba caches them for later runs" if kernel != "numba-gil" else "the numba-gil kernel is never cached"
    return (f"compiling kernels for {dtype}, once: ~{sum(s for _, s in cold)} s on a 3 GHz core ({note})")


# --- plot, bench ------------------------------------------------------------------------------

def cmd_plot(args) -> int:
    result = checkpoint.load(args.run)
    seed = result.config["seed"] if args.seed is None else args.seed
    name, X, X_test, _, y_test = load_data(args.data, args.target, args.test_size, seed)
    classes, dtype = result.ensemble.classes_, result.config["dtype"]
    try:
        held_out = checkpoint.data_digest(*api.check_validation((X_test, y_test), X, classes, dtype))
    except ValueError:
        held_out = None
    if held_out != result.state.validation_sha256:
        if args.data is not None:
            raise UsageError(f"{args.run} was not validated on the held-out part of {name} (--test-size "
                             f"{args.test_size}, --seed {seed}); give the data flags the run was trained with")
        X_test = y_test = None       # no alignment figure
    drawn = plots.draw(result, args.plots_dir, X=X_test, y=y_test)
    skipped = dict(drawn.skipped)
    if "alignment" in skipped and X_test is None and len(result.ensemble) > 1:
        skipped["alignment"] = ("the run's held-out data is not known; give the --data, --target, --test-size "
                                "and --seed it was trained with")
    print("\n".join(figure_lines(drawn.paths, skipped)))
    return 0


def cmd_bench(args) -> int:
    from .reports import scaling
    return scaling.main(args.args)


def cmd_report(args) -> int:
    from .reports import findings
    if not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out}: no such folder")
    findings.run(args.out, args.quick, args.json, log=lambda line: print(line, file=sys.stderr, flush=True))
    return 0


def main(argv: list | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv[:1] == ["bench"]:       # the benchmark report parses its own options, --help included
        args = argparse.Namespace(command="bench", handler=cmd_bench, debug=False, args=argv[1:])
    else:
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:      # --help, or a usage error argparse has printed
            return int(done.code or 0)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"fastffnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, FastFFNNError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"fastffnn {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1 if isinstance(exc, FastFFNNError) else 2
