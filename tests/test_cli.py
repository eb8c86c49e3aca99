"""The ``fastffnn`` command: ``train`` end to end in a fresh process (summary, figures, JSON, a
checkpoint), the progress bar on a terminal and not elsewhere, the user's CSV, one-line errors
with exit status 2, ``plot`` redrawing a saved run, ``bench``.

Each subprocess costs a Python start-up and imports (1-2 s), so the runs are shared: one main run
serves most tests; the error cases run in-process through ``cli.main``, and one of them also in a
fresh process to show the real exit status and no traceback."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest

import fastffnn as ff
from fastffnn import cli, plots

pytestmark = pytest.mark.timeout(240)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPOCHS, INSTANCES, N_TRAIN = 30, 3, 455        # 455: the breast-cancer train split at test_size 0.2


def fastffnn(*args, cwd, check=True) -> subprocess.CompletedProcess:
    """``python -m fastffnn ARGS`` in ``cwd``, stdout and stderr captured (not a terminal)."""
    proc = subprocess.run([sys.executable, "-m", "fastffnn", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def on_a_terminal(*args, cwd) -> tuple[int, str]:
    """``python -m fastffnn ARGS`` with stdout and stderr on a pseudo-terminal of 120 columns;
    returns (exit status, everything it wrote)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "fastffnn", *args], cwd=cwd, stdin=follower, stdout=follower,
                            stderr=follower)
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:         # EIO: every copy of the follower is closed, the child is done
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    return proc.wait(timeout=180), b"".join(chunks).decode()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    """``fastffnn train`` as the main job, in a fresh folder: the default figures folder, a JSON
    summary and a checkpoint."""
    folder = tmp_path_factory.mktemp("main")
    proc = fastffnn("train", "--epochs", str(EPOCHS), "--instances", str(INSTANCES), "--sync-every", "10",
                    "--json", "summary.json", "--save", "run.npz", cwd=folder)
    return folder, proc


def figure_name(kind: str) -> str:
    return f"{kind}_threads_none_i{INSTANCES}_e{EPOCHS}_n{N_TRAIN}.png"


def test_train_prints_the_summary_table(main_run):
    _, proc = main_run
    out = proc.stdout
    assert "breast cancer (embedded): 455 train / 114 test samples, 30 features" in out
    assert f"{INSTANCES} instances of 30-32-32-1 relu, {EPOCHS} epochs, backend=threads" in out
    assert "sync=none" in out          # the main job's defaults are train's, from REPORT.md
    header = next(line for line in out.splitlines() if line.startswith("instance"))
    for column in ("optimizer", "lr", "l2", "momentum/betas", "batch", "penalty", "final loss", "train acc",
                   "test acc", "compute s", "wait s"):
        assert column in header
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in ([str(k)] for k in range(INSTANCES))]
    assert len(rows) == INSTANCES and all(len(row) == 12 for row in rows)
    assert all(row[1] == "sgd" for row in rows)
    assert all(0.8 < float(row[9]) <= 1.0 for row in rows)         # test accuracy
    assert "ensemble" in out and "barrier wait" in out and "compute" in out and "wall" in out
    assert "checkpoint: run.npz" in out


def test_train_draws_every_kind_named_by_the_convention(main_run):
    folder, proc = main_run
    for kind in plots.KINDS:
        path = folder / "Plots" / figure_name(kind)
        assert f"figure: Plots/{figure_name(kind)}" in proc.stdout
        width, height = png_size(path)
        assert 600 <= width <= 3000 and 400 <= height <= 3000, (kind, width, height)
        assert path.stat().st_size > 20_000, kind       # a drawn figure, not an empty canvas
    assert sorted(p.name for p in (folder / "Plots").iterdir()) == sorted(map(figure_name, plots.KINDS))


def test_train_without_a_terminal_shows_no_bar(main_run):
    _, proc = main_run
    assert "epoch/s" not in proc.stderr and "loss=" not in proc.stderr


def test_the_json_summary_parses_and_matches_the_run(main_run):
    folder, proc = main_run
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["config"]["sync"] == "none" and summary["config"]["sync_layers"] == "all"
    assert summary["config"]["epochs"] == EPOCHS
    assert summary["data"] == {"name": "breast cancer (embedded)", "train_samples": 455, "test_samples": 114,
                               "features": 30}
    assert [i["instance"] for i in summary["instances"]] == list(range(INSTANCES))
    assert summary["ensemble"]["test_accuracy"] > 0.85
    assert summary["figures"] == [f"Plots/{figure_name(kind)}" for kind in plots.KINDS]
    assert summary["timing"]["wall_s"] > 0 and summary["checkpoint"] == "run.npz"
    saved = ff.load(folder / "run.npz")
    assert [i["final_loss"] for i in summary["instances"]] == saved.history.losses[:, -1].tolist()


def test_the_saved_run_holds_the_snapshots_the_network_figure_draws(main_run):
    folder, _ = main_run
    saved = ff.load(folder / "run.npz")
    assert sorted(saved.history.snapshots) == [0, EPOCHS // 2, EPOCHS]
    assert list(saved.history.sync_epochs) == [10, 20, 30]


def test_plot_redraws_the_same_figures_from_the_saved_run(main_run):
    folder, _ = main_run
    proc = fastffnn("plot", "run.npz", "--plots-dir", "again", cwd=folder)
    for kind in plots.KINDS:
        assert f"figure: again/{figure_name(kind)}" in proc.stdout
        again, first = folder / "again" / figure_name(kind), folder / "Plots" / figure_name(kind)
        assert again.read_bytes() == first.read_bytes(), kind


def test_on_a_terminal_the_bar_shows_the_global_loss_and_quiet_silences_it(tmp_path):
    status, shown = on_a_terminal("train", "--epochs", "40", "--instances", "2", "--sync-every", "10", "--no-plots",
                                  cwd=tmp_path)
    assert status == 0, shown
    assert "2 instances (threads)" in shown and "40/40" in shown and "loss=" in shown
    status, quiet = on_a_terminal("train", "--epochs", "40", "--instances", "2", "--no-plots", "--quiet",
                                  cwd=tmp_path)
    assert status == 0, quiet
    assert "loss=" not in quiet and "epoch/s" not in quiet and "compiling" not in quiet
    assert "ensemble" in quiet


def test_train_on_a_csv_with_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    labels = np.where(X @ [1.5, -2.0, 0.5] > 0, "malignant", "benign")
    rows = ["radius,texture,diagnosis,smoothness"] + [f"{a:.5f},{b:.5f},{c},{d:.5f}"
                                                       for (a, b, d), c in zip(X, labels)]
    (tmp_path / "cells.csv").write_text("\n".join(rows) + "\n")
    proc = fastffnn("train", "--data", "cells.csv", "--target", "diagnosis", "--epochs", "200", "--instances", "2",
                    "--hidden", "8", "--no-plots", "--json", "s.json", cwd=tmp_path)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["data"] == {"name": "cells.csv (target 'diagnosis')", "train_samples": 96, "test_samples": 24,
                               "features": 3}
    assert summary["sizes"] == [3, 8, 1] and summary["ensemble"]["test_accuracy"] >= 0.8
    assert "cells.csv (target 'diagnosis'): 96 train / 24 test samples, 3 features" in proc.stdout


def test_the_optimizer_flags_reach_each_instance(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--optimizer", "sgd,adam", "--lr", "0.05,0.01", "--beta2", "0.99", "--instances", "2",
                     "--epochs", "20", "--no-plots", "--quiet", "--json", "s.json"]) == 0
    instances = json.loads(Path("s.json").read_text())["instances"]
    assert [(i["optimizer"], i["lr"], i["beta2"]) for i in instances] == [("sgd", 0.05, 0.99), ("adam", 0.01, 0.99)]
    table = cli.format_summary(json.loads(Path("s.json").read_text()))
    rows = [line.split() for line in table.splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert [row[1:5] for row in rows] == [["sgd", "0.05", "0.001", "0.9"], ["adam", "0.01", "0.001", "0.9/0.99"]]


# --- errors: one line on stderr, exit status 2 ------------------------------------------------

@pytest.fixture
def data_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("ok.csv").write_text("a,b,label\n" + "".join(f"{i},{i % 3},{'x' if i % 2 else 'y'}\n" for i in range(20)))
    Path("text.csv").write_text("a,b,label\n1,2,x\n3,high,y\n5,6,x\n7,8,y\n")
    Path("one.csv").write_text("a,b,label\n" + "".join(f"{i},{i},x\n" for i in range(10)))
    return tmp_path


ERRORS = {
    "a missing file": (["--data", "missing.csv", "--target", "label"], "--data missing.csv: no such file"),
    "an unknown column": (["--data", "ok.csv", "--target", "class"],
                          "--target 'class' is not one of its columns; its columns are 'a', 'b', 'label'"),
    "no target": (["--data", "ok.csv"], "no --target; its columns are 'a', 'b', 'label'"),
    "a text feature": (["--data", "text.csv", "--target", "label"], "column 'b' is not numeric (line 3: 'high')"),
    "a single class": (["--data", "one.csv", "--target", "label"], "at least 2 classes, but it contains only one"),
    "a bad value": (["--instances", "0"], "The 'instances' parameter of train must be an int in the range [1, inf)"),
    "an unknown choice": (["--backend", "gpu"], "argument --backend: invalid choice: 'gpu'"),
    "not a number": (["--lr", "fast"], "argument --lr: expected a number or a comma-separated list"),
    "lists of two lengths": (["--lr", "0.1,0.2", "--momentum", "0.1,0.2,0.3"], "lists of equal length"),
    "a list against --instances": (["--lr", "0.1,0.2", "--instances", "3"], "has 2 entries but instances=3"),
    "a bad hyperparameter": (["--momentum", "1.5"], "The 'momentum' parameter of HyperParams"),
    "an unknown optimizer": (["--optimizer", "adamw"], "The 'optimizer' parameter of HyperParams must be a str among"),
    "a snapshot past the end": (["--epochs", "10", "--snapshot-epochs", "20"], "[0, 10]"),
    "a checkpoint folder that does not exist": (["--save", "no/such/run.npz"], "not an existing folder"),
    "a missing checkpoint": (["--resume", "gone.npz"], "gone.npz: no such checkpoint file"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_each_error_is_one_line_on_stderr_and_exit_status_2(data_files, capsys, case):
    argv, message = ERRORS[case]
    assert cli.main(["train", "--no-plots", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("fastffnn train: error: "), err
    assert message in err


def test_debug_adds_the_traceback(data_files, capsys):
    assert cli.main(["train", "--debug", "--data", "missing.csv", "--target", "label"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.endswith("--data missing.csv: no such file\n")


def test_an_error_in_a_fresh_process_exits_2_without_a_traceback(tmp_path):
    proc = fastffnn("train", "--sync-every", "0", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
    assert "The 'sync_every' parameter of train must be an int in the range [1, inf). Got 0 instead." in proc.stderr


def test_resume_refuses_flags_that_change_the_run(main_run, capsys, monkeypatch):
    monkeypatch.chdir(main_run[0])
    assert cli.main(["train", "--resume", "run.npz", "--instances", "4", "--lr", "0.05", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--instances would change them" in err    # --lr 0.05 is the run's own


def test_plot_takes_the_data_as_a_file_and_refuses_a_split_the_run_was_not_validated_on(main_run, capsys):
    folder, _ = main_run
    from sklearn.datasets import load_breast_cancer
    X, y = load_breast_cancer(return_X_y=True)
    np.savez(folder / "cancer.npz", X=X, y=y)
    proc = fastffnn("plot", "run.npz", "--data", "cancer.npz", "--plots-dir", "from_file", cwd=folder)
    assert f"figure: from_file/{figure_name('alignment')}" in proc.stdout
    assert cli.main(["plot", str(folder / "run.npz"), "--data", str(folder / "cancer.npz"), "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was not validated on the held-out part of cancer.npz" in err


def test_resume_continues_the_saved_run_to_the_straight_one(main_run, tmp_path, capsys, monkeypatch):
    folder, _ = main_run
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--resume", str(folder / "run.npz"), "--epochs", "40", "--save", "more.npz",
                     "--quiet", "--no-plots"]) == 0
    assert "40 epochs" in capsys.readouterr().out
    X, X_test, y, y_test = ff.datasets.breast_cancer(test_size=0.2, seed=0)
    straight = ff.train(X, y, epochs=40, instances=INSTANCES, sync_every=10,
                        validation=(X_test, y_test))
    resumed = ff.load("more.npz")
    assert np.array_equal(resumed.ensemble.params, straight.ensemble.params)
    assert np.array_equal(resumed.history.losses, straight.history.losses)


def test_the_compile_notice_reads_numbas_cache(main_run):
    assert cli.cold_kernels("float64", "numba", "threads") == []        # compiled by the runs above
    assert cli.compile_notice("float64", "numba", "threads") is None
    assert [name for name, _ in cli.cold_kernels("float64", "numba-gil", "threads")] == ["_train_span"]
    assert "never cached" in cli.compile_notice("float64", "numba-gil", "threads")


def test_bench_prints_the_scaling_report(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"benchmarks": []}))
    assert cli.main(["bench", str(tmp_path / "results.json"), "--no-plots"]) == 0
    assert "no fastffnn benchmarks" in capsys.readouterr().out
