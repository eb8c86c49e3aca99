"""Checkpoints: ``save(result, path)``, ``load(path)``, and the ``Writer`` behind
``train(..., checkpoint=PATH, checkpoint_every=EPOCHS)``.

A checkpoint is one ``.npz`` file -- an uncompressed zip of ``.npy`` arrays -- holding a
``TrainResult`` and the ``TrainState`` that ``fastffnn.resume`` continues from.  Format version 2:

- ``manifest``: a uint8 array of UTF-8 JSON: ``format`` ("fastffnn-checkpoint"), ``version``, the
  ``fastffnn`` version that wrote it, the run's ``config`` and its ``config_sha256``,
  ``data_sha256`` and ``validation_sha256`` (digests of the data the run was trained and
  validated on), ``target_epochs``, ``wall``, each instance's ``hyperparams``, the ``snapshots``'
  epochs, the ``exploits`` of PBT's explore (``History.exploits``), and for every other array its ``dtype``, ``shape`` and ``sha256``;
- ``params`` (N, P); the optimizer's ``moments`` (N, 2, P) and ``steps`` (N,) int64; ``rng`` (N, 1)
  uint64; ``order`` (N, n) int64; ``hyper`` (N, H);
  ``classes`` (K,); ``losses`` (N, epochs); ``sync_epochs``, ``global_loss``,
  ``ensemble_val_accuracy`` (R,) and ``val_accuracy`` (R, N); ``compute``, ``barrier_wait`` (N,);
  ``snapshot_<epoch>`` (N, P) for each snapshot.

The data itself is not stored (it may be large): a resume is given X and y again, and refused
when their digest differs from the checkpoint's.

Version 1, written before Adam (every run SGD), is read as the version-2 checkpoint of the same
run (``_from_version_1``), so it resumes bit-identically; saving it again writes version 2.

Writing is atomic: the new checkpoint goes to a temporary file in the same folder
(``.<name>.<random>.tmp``), is flushed to disk and renamed over ``path`` (``os.replace``); the
checkpoint it replaces is kept as ``<path>.prev``.  ``path`` therefore always holds a complete
checkpoint, and a write that fails leaves both files as they were and no temporary file.

Loading never unpickles (``np.load(allow_pickle=False)``, after a look at the file's first bytes)
and checks everything before it builds anything: the manifest's format and version, the config
against its digest, every array's dtype, shape and sha256, and the arrays' shapes against the
config.  A file that fails a check raises ``CheckpointError`` naming the file and the problem.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .errors import CheckpointError
from .hyperparams import HyperParams
from .kernels.config import BATCH_SIZE, N_HYPER
from .network import ACTIVATIONS, Ensemble, Topology
from .results import Exploit, History, Timing, TrainResult, TrainState

FORMAT, VERSION = "fastffnn-checkpoint", 2
READABLE = (1, VERSION)     # the format versions ``load`` reads
MANIFEST = "manifest"
PREVIOUS = ".prev"          # the checkpoint a write replaced: <path>.prev
ZIP_MAGIC = b"PK\x03\x04"


def previous(path) -> Path:
    """Where the checkpoint that ``path`` replaced is kept."""
    path = Path(path)
    return path.with_name(path.name + PREVIOUS)


def digest(*arrays: np.ndarray) -> str:
    """sha256 of arrays: each one's dtype, shape and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a)
    return h.hexdigest()


def data_digest(X: np.ndarray, T: np.ndarray, classes: np.ndarray | None = None) -> str:
    """The digest a checkpoint keeps of a run's data: X (n, F) and the encoded targets T (n, K)
    in the run's dtype, and the class labels (by ``repr``, so that 1 and "1" differ)."""
    keys = () if classes is None else (np.array([repr(c) for c in np.asarray(classes).tolist()]),)
    return digest(X, T, *keys)


def canonical_json(value) -> str:
    """Canonical JSON (sorted keys, numpy scalars as Python numbers): the manifest, and what its
    digests hash."""
    def plain(o):
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"{type(o).__name__} {o!r} cannot be stored in a checkpoint's manifest")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=plain)


def _config_digest(config) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def _storable_classes(classes: np.ndarray) -> np.ndarray:
    """The class labels as an array ``np.load(allow_pickle=False)`` can read back: numbers,
    booleans or strings, never objects."""
    classes = np.asarray(classes)
    if classes.dtype.kind == "O":
        classes = np.asarray(classes.tolist())
    if classes.dtype.kind not in "biufU":
        raise ValueError(f"Class labels of dtype {classes.dtype} cannot be stored without pickling them; "
                         f"train with numeric or string labels to save the run.")
    return classes


def _arrays(result: TrainResult) -> dict:
    history, state, timing = result.history, result.state, result.timing
    arrays = {"params": result.ensemble.params, "moments": state.moments, "steps": state.steps, "rng": state.rng,
              "order": state.order, "hyper": state.hyper, "classes": _storable_classes(result.ensemble.classes_),
              "losses": history.losses, "sync_epochs": history.sync_epochs, "global_loss": history.global_loss,
              "val_accuracy": history.val_accuracy, "ensemble_val_accuracy": history.ensemble_val_accuracy,
              "compute": timing.compute, "barrier_wait": timing.barrier_wait}
    arrays.update({f"snapshot_{epoch}": params for epoch, params in history.snapshots.items()})
    return {name: np.ascontiguousarray(a) for name, a in arrays.items()}


def save(result: TrainResult, path) -> Path:
    """Write ``result`` to the checkpoint file ``path``, atomically.

    Parameters
    ----------
    result : TrainResult
        As returned by ``fastffnn.train`` or ``fastffnn.resume`` (or ``load``).
    path : str or path-like
        The file, conventionally ``*.npz``.  The checkpoint it replaces is kept as ``<path>.prev``.

    Returns
    -------
    Path
        ``path``.
    """
    if result.state is None:
        raise ValueError("This TrainResult has no training state (result.state is None), so it cannot be "
                         "saved as a checkpoint; save a result returned by fastffnn.train or fastffnn.resume.")
    arrays = _arrays(result)
    config = json.loads(canonical_json(result.config))       # as load will read it back
    state = result.state
    manifest = {"format": FORMAT, "version": VERSION, "fastffnn": _version(), "config": config,
                "config_sha256": _config_digest(config), "data_sha256": state.data_sha256,
                "validation_sha256": state.validation_sha256, "target_epochs": state.target_epochs,
                "wall": result.timing.wall, "hyperparams": [asdict(hp) for hp in result.hyperparams],
                "snapshots": sorted(result.history.snapshots),
                "exploits": [asdict(e) for e in result.history.exploits],
                "arrays": {name: {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": digest(a)}
                           for name, a in arrays.items()}}
    arrays[MANIFEST] = np.frombuffer(canonical_json(manifest).encode(), dtype=np.uint8)
    path = Path(path)
    _write(path, arrays)
    return path


def _version() -> str:
    from . import __version__
    return __version__


def _write(path: Path, arrays: dict) -> None:
    """Write ``arrays`` as an .npz at ``path``: temp file, fsync, keep the old file as .prev, rename."""
    folder = path.parent
    keep = folder / f".{path.name}.{secrets.token_hex(4)}.prev.tmp"
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, a in arrays.items():
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, a, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            # a second name for the old file, renamed into place, so that ``path`` never goes missing
            try:
                os.link(path, keep)
            except OSError:         # a file system without hard links
                shutil.copyfile(path, keep)
            os.replace(keep, previous(path))
        os.replace(tmp, path)
    except BaseException as exc:
        for leftover in (tmp, keep):
            if leftover is not None and os.path.lexists(leftover):
                os.unlink(leftover)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"Could not write the checkpoint {path}: {exc.strerror or exc}; the "
                                     f"checkpoint there (if any) is unchanged") from exc
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable (POSIX); where a folder cannot be opened, the rename still stands."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read(path: Path) -> tuple:
    """(manifest, arrays) of a checkpoint file, every array checked against the manifest."""
    if not path.is_file():
        prev = previous(path)
        hint = f"; {prev} exists (the last write was interrupted?), load that" if prev.is_file() else ""
        raise CheckpointError(path, f"no such checkpoint file{hint}")
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC:
        what = ("is empty" if not head else "holds a pickle" if head[:1] == b"\x80"
                else "is a single .npy array" if head.startswith(b"\x93NUM") else "is not a .npz file")
        raise CheckpointError(path, f"{what}, not a fastffnn checkpoint; refused without reading it "
                                    f"(fastffnn never unpickles)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = {name for name in npz.files if name != MANIFEST}
            if MANIFEST not in npz.files:
                raise CheckpointError(path, f"is an .npz file without a fastffnn manifest (it holds "
                                            f"{sorted(names)}), not a fastffnn checkpoint")
            manifest = _manifest(path, npz[MANIFEST])
            listed = set(manifest["arrays"])
            if names != listed:
                raise CheckpointError(path, f"holds the arrays {sorted(names)}, but its manifest lists "
                                            f"{sorted(listed)}: the file is damaged or was altered")
            arrays = {name: npz[name] for name in sorted(names)}
    except CheckpointError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise CheckpointError(path, f"holds pickled Python objects ({exc}); a checkpoint never does, "
                                        f"and fastffnn never unpickles: refused") from exc
        raise CheckpointError(path, f"is damaged ({exc})") from exc
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, zlib.error) as exc:
        raise CheckpointError(path, f"is truncated or damaged ({type(exc).__name__}: {exc})") from exc
    for name, a in arrays.items():
        spec = manifest["arrays"][name]
        if a.dtype.str != spec["dtype"] or list(a.shape) != spec["shape"]:
            raise CheckpointError(path, f"array {name!r} is {a.dtype.str} of shape {a.shape}, but the manifest "
                                        f"says {spec['dtype']} of shape {tuple(spec['shape'])}")
        if digest(a) != spec["sha256"]:
            raise CheckpointError(path, f"array {name!r} does not match its sha256: the file is damaged")
    return manifest, arrays


def _manifest(path: Path, raw: np.ndarray) -> dict:
    """The manifest, once its format, version and config digest check out."""
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(path, f"its manifest is a {raw.dtype} array of shape {raw.shape}, not JSON bytes")
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"its manifest is not valid JSON ({exc}): the file is damaged") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(path, "is an .npz file with a foreign manifest, not a fastffnn checkpoint")
    version = manifest.get("version")
    if version not in READABLE:
        newer = isinstance(version, int) and version > VERSION
        raise CheckpointError(path, f"is in checkpoint format version {version!r}, written by fastffnn "
                                    f"{manifest.get('fastffnn', '?')}; this fastffnn ({_version()}) reads versions "
                                    f"{', '.join(map(str, READABLE))}"
                                    + ("; upgrade fastffnn to load it" if newer else ""))
    if not isinstance(manifest.get("arrays"), dict) or not isinstance(manifest.get("config"), dict):
        raise CheckpointError(path, "its manifest lacks the config or the list of arrays: the file is damaged")
    if _config_digest(manifest["config"]) != manifest.get("config_sha256"):
        raise CheckpointError(path, "its config does not match its config_sha256: the manifest was altered "
                                    "or damaged")
    return manifest


def load(path) -> TrainResult:
    """Read a checkpoint written by ``save`` (or by ``train(checkpoint=...)``).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    TrainResult
        Equal to the result that was saved, with its ``state``; ``config["epochs"]`` is the epochs
        trained when it was written.

    Raises
    ------
    CheckpointError
        The file is missing, truncated, damaged, foreign, of another format version, holds pickled
        objects, or its arrays do not fit its config.
    """
    path = Path(path)
    manifest, arrays = _read(path)
    try:
        return _result(path, manifest, arrays)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(path, f"its manifest does not describe a run ({type(exc).__name__}: {exc})") from exc


def _result(path: Path, manifest: dict, arrays: dict) -> TrainResult:
    config = {**manifest["config"], "hidden": tuple(manifest["config"]["hidden"])}
    if config["activation"] not in ACTIVATIONS:
        raise CheckpointError(path, f"its config names the activation {config['activation']!r}, not one of "
                                    f"{sorted(ACTIVATIONS)}")
    classes = arrays["classes"]
    topology = Topology((config["n_features"], *config["hidden"], 1 if len(classes) == 2 else len(classes)),
                        config["activation"])
    N, P, n, epochs = config["instances"], topology.n_params, config["n_samples"], config["epochs"]
    if manifest["version"] == 1:
        arrays = _from_version_1(arrays, N, n, epochs)
    snapshots = {int(e): arrays[f"snapshot_{e}"] for e in manifest["snapshots"]}
    expected = {"params": (N, P), "moments": (N, 2, P), "steps": (N,), "rng": (N, 1), "order": (N, n),
                "hyper": (N, N_HYPER), "losses": (N, epochs), "compute": (N,), "barrier_wait": (N,),
                **{f"snapshot_{e}": (N, P) for e in snapshots}}
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise CheckpointError(path, f"its config ({N} instances of sizes {topology.sizes}, {n} samples, "
                                        f"{epochs} epochs) does not fit array {name!r} of shape "
                                        f"{arrays[name].shape} (expected {shape})")
    if arrays["params"].dtype != np.dtype(config["dtype"]):
        raise CheckpointError(path, f"its parameters are {arrays['params'].dtype}, but its config says "
                                    f"dtype={config['dtype']!r}")
    hyperparams = [HyperParams(**hp) for hp in manifest["hyperparams"]]
    if len(hyperparams) != N:
        raise CheckpointError(path, f"its manifest lists {len(hyperparams)} hyperparameter sets for {N} instances")
    history = History(arrays["losses"], arrays["sync_epochs"], arrays["global_loss"], arrays["val_accuracy"],
                      arrays["ensemble_val_accuracy"], snapshots, _exploits(path, manifest.get("exploits", [])))
    state = TrainState(arrays["moments"], arrays["steps"], arrays["rng"], arrays["order"], arrays["hyper"],
                       int(manifest["target_epochs"]), manifest["data_sha256"], manifest["validation_sha256"])
    return TrainResult(Ensemble(topology, arrays["params"], hyperparams, classes), history,
                       Timing(float(manifest["wall"]), arrays["compute"], arrays["barrier_wait"]), config,
                       hyperparams, state)


def _exploits(path: Path, records) -> list:
    """The manifest's PBT copies as ``Exploit`` records (the manifest's digest is not checked, so
    their form is)."""
    try:
        exploits = [Exploit(int(r["epoch"]), int(r["source"]), int(r["target"]),
                            {k: float(v) for k, v in r["old"].items()}, {k: float(v) for k, v in r["new"].items()})
                    for r in records]
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise CheckpointError(path, f"its manifest's 'exploits' are malformed ({type(exc).__name__}: {exc})") from exc
    return exploits


def _from_version_1(arrays: dict, N: int, n: int, epochs: int) -> dict:
    """A version-1 checkpoint's arrays as version 2's.  Version 1 ran SGD only: its ``velocity``
    (N, P) is the first row of ``moments``, the second is zero; ``steps`` follows from the epochs
    and each instance's batch size (fixed for a run); its five ``hyper`` columns are the first five
    of ``HYPER_COLUMNS``, and the new ones take SGD's code and the HyperParams defaults."""
    velocity, hyper = arrays["velocity"], arrays["hyper"]
    rows = np.tile(HyperParams().row(n).astype(hyper.dtype), (N, 1))
    rows[:, :5] = hyper
    batches = -(-n // rows[:, BATCH_SIZE].astype(np.int64))         # steps per epoch: ceil(n / B)
    arrays = {name: a for name, a in arrays.items() if name != "velocity"}
    return {**arrays, "moments": np.stack([velocity, np.zeros_like(velocity)], axis=1),
            "steps": epochs * batches, "hyper": rows}


class Writer:
    """Writes a run's checkpoints to ``path`` from the barrier action (so in the calling process,
    whatever the backend): at the first sync point at least ``every`` epochs after the last one
    written, or at every sync point when ``every`` is None, and always at the end of the run."""

    def __init__(self, path, every: int | None, start_epoch: int, caller: str = "train"):
        self.path, self.every, self.written = Path(path), every, start_epoch
        folder = self.path.parent
        if not folder.is_dir():
            raise ValueError(f"The 'checkpoint' parameter of {caller} names a file in {str(folder)!r}, which is "
                             f"not an existing folder. Got {str(path)!r}; create the folder first.")

    def due(self, epoch: int) -> bool:
        """Whether the sync point at ``epoch`` gets a checkpoint (the driver writes the end anyway)."""
        return self.every is None or epoch - self.written >= self.every

    def write(self, result: TrainResult) -> None:
        save(result, self.path)
        self.written = result.config["epochs"]
