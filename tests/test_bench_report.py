"""The scaling report (fastffnn.reports.scaling, fastffnn.plots.scaling) on a small synthetic pytest-benchmark JSON: no timing."""
import json

import pytest

from fastffnn.plots.scaling import plot
from fastffnn.reports import scaling as bench

CORES = 2
ROOF = 1000.0       # instance-epochs/s at the roofline


def train_record(group, label, instances, median, *, area=None, workload="seed", epochs=100, **extra):
    backend, _, kernel = label.partition("/")
    info = dict(kind="train", area=area or group.split("-")[0], workload=workload, label=label,
                backend=backend, kernel=kernel or None, instances=instances, workers=min(instances, CORES),
                epochs=epochs, n_samples=512, flops_per_epoch=5_210_112, cores=CORES, dgemm_gflops=0.5,
                roofline_instance_epochs_per_s=ROOF)
    info.update(extra)
    return {"group": group, "name": f"test[{label}-{instances}]", "extra_info": info,
            "stats": {"median": median, "min": median, "mean": median, "rounds": 5}}


def barrier_record(label, parties, median, **extra):
    return {"group": f"barrier-parties-{parties}", "name": f"test[{label}-{parties}]",
            "extra_info": dict(kind="barrier", label=label, parties=parties, cores=CORES, **extra),
            "stats": {"median": median}}


def synthetic_records():
    return [
        # throughput = N * 100 epochs / median
        train_record("backends-seed", "serial/numba", 1, 0.5),          # 200 /s: the baseline
        train_record("backends-seed", "serial/numba", 2, 1.0),          # 200 /s
        train_record("backends-seed", "threads/numba", 1, 0.5),         # 200 /s
        train_record("backends-seed", "threads/numba", 2, 0.5),         # 400 /s: speedup 2
        train_record("backends-seed", "threads/numba", 4, 1.25),        # 320 /s: speedup 1.6
        train_record("backends-seed", "processes/numba", 2, 0.8, overhead_s=0.3),
        train_record("gil-seed", "threads/numba-gil", 1, 0.5),
        train_record("gil-seed", "threads/numba-gil", 2, 1.0),
        train_record("sync-seed", "none", 8, 2.0),
        train_record("sync-seed", "average every 10", 8, 2.1),
        train_record("peers-seed", "threads/numba", 8, 2.0),             # 400 /s
        train_record("peers-seed", "jax vmap", 8, 5.0, peer=True),       # 160 /s: 2.5x
        train_record("growth", "threads/numba", 2, 0.5),                 # seed, 400 /s
        train_record("growth", "threads/numba", 2, 0.5, workload="wide", epochs=1,
                     flops_per_epoch=5_210_112 * 200),                   # 4 /s, 2x seed's FLOP rate
        train_record("backends-seed-f32", "threads/numba", 2, 0.25, workload="seed-f32", dtype="float32",
                     sgemm_gflops=1.0),                                  # roofline ROOF at sgemm 1.0
        barrier_record("ConditionBarrier", 2, 20e-6),
        barrier_record("ConditionBarrier", 8, 80e-6),
        barrier_record("threading.Barrier", 2, 15e-6),
        barrier_record("ProcessCoordinator", 2, 3.0, rounds_per_call=1000, round_s=150e-6),
    ]


@pytest.fixture
def records():
    return synthetic_records()


@pytest.fixture(scope="module", autouse=True)
def plotted(tmp_path_factory):
    """The figures of the synthetic records, drawn once before any test's residue check (matplotlib
    keeps the font files it opens for good)."""
    records = synthetic_records()
    return plot(bench.rows(records), bench.barrier_rows(records), tmp_path_factory.mktemp("Plots"))


def by(rows, group, label, instances):
    return next(r for r in rows if r.group == group and r.label == label and r.instances == instances)


def test_roofline_is_the_best_gemm_of_the_run_for_the_rows_dtype(records):
    # a file that measured dgemm in a slow phase gets the run's best roofline too: twice the dgemm
    # rate, half the % of roofline, for every float64 row; a float32 row keeps the sgemm one; the
    # footnote names both rates
    records[-6]["extra_info"].update(dgemm_gflops=1.0, roofline_instance_epochs_per_s=2 * ROOF)
    assert bench.best_gemm(records) == bench.best_gemm(records, "float64") == 1.0
    assert bench.best_gemm(records, "float32") == 1.0
    rows = bench.rows(records)
    assert by(rows, "backends-seed", "threads/numba", 2).pct_roofline == pytest.approx(20.0)
    assert by(rows, "growth", "threads/numba", 2).pct_roofline == pytest.approx(20.0)
    f32 = by(rows, "backends-seed-f32", "threads/numba", 2)
    assert f32.pct_roofline == pytest.approx(80.0) and f32.dtype == "float32"
    assert all(r.gemm_gflops == 1.0 for r in rows)
    assert "the best single-thread gemm of the row's dtype in the run, dgemm 1.0 GFLOP/s, sgemm 1.0 GFLOP/s" \
        in bench.table(rows)


def test_float32_rows_use_the_sgemm_roofline(records):
    # a faster sgemm elsewhere in the run halves the float32 row's % of roofline, not a float64 one's
    records.append(train_record("peers-seed-f32", "jax vmap", 8, 5.0, workload="seed-f32", dtype="float32",
                                sgemm_gflops=2.0, roofline_instance_epochs_per_s=2 * ROOF, peer=True))
    rows = bench.rows(records)
    assert by(rows, "backends-seed-f32", "threads/numba", 2).pct_roofline == pytest.approx(40.0)
    assert by(rows, "backends-seed", "threads/numba", 2).pct_roofline == pytest.approx(40.0)


def test_rows_derive_throughput_speedup_efficiency_and_roofline(records):
    rows = bench.rows(records)
    assert len(rows) == 15
    r = by(rows, "backends-seed", "threads/numba", 2)
    assert r.throughput == pytest.approx(400.0)
    assert r.speedup == pytest.approx(2.0) and r.efficiency == pytest.approx(1.0)
    assert r.pct_roofline == pytest.approx(40.0)
    r = by(rows, "backends-seed", "threads/numba", 4)
    assert r.speedup == pytest.approx(1.6) and r.efficiency == pytest.approx(0.8)   # 4 instances, 2 cores
    assert by(rows, "gil-seed", "threads/numba-gil", 2).speedup == pytest.approx(1.0)
    assert by(rows, "backends-seed", "processes/numba", 2).note == "outside compute 0.300 s"


def test_speedup_falls_back_to_the_same_label_at_n_1_when_no_serial_run():
    rows = bench.rows([train_record("gil-seed", "threads/numpy", 1, 1.0),
                       train_record("gil-seed", "threads/numpy", 2, 1.0)])
    assert all(r.own_baseline for r in rows)
    assert rows[1].speedup == pytest.approx(2.0)
    assert "*: over the same backend at N = 1" in bench.table(rows)


def test_group_notes_compare_sync_growth_and_peers(records):
    rows = bench.rows(records)
    assert by(rows, "sync-seed", "average every 10", 8).note == "+5.0 % time vs sync none"
    assert by(rows, "sync-seed", "none", 8).note == ""
    assert by(rows, "peers-seed", "jax vmap", 8).note == "best fastffnn is 2.50x this"
    assert by(rows, "peers-seed", "threads/numba", 8).note == "2.50x the best peer (jax vmap)"
    wide = next(r for r in rows if r.workload == "wide")
    assert wide.note.endswith("2.00x seed's")


def test_adam_rows_give_their_ratio_to_sgd():
    rows = bench.rows([train_record("optimizers-seed", "threads sgd", 8, 2.0),
                       train_record("optimizers-seed", "threads adam", 8, 2.5)])
    assert by(rows, "optimizers-seed", "threads adam", 8).note == "0.80x SGD's throughput"
    assert by(rows, "optimizers-seed", "threads sgd", 8).note == ""


def test_a_row_timed_alternated_gives_its_paired_ratios_instead():
    rows = bench.rows([train_record("optimizers-seed", "threads sgd", 8, 2.0),
                       train_record("optimizers-seed", "threads adam", 8, 2.5,
                                    alternated={"SGD": 0.875, "SGD with momentum 0.9": 0.9})])
    assert by(rows, "optimizers-seed", "threads adam", 8).note == \
        "0.88x SGD's, 0.90x SGD with momentum 0.9's throughput, alternated round by round"


def test_a_group_timed_alternated_plots_its_paired_ratios(tmp_path):
    from matplotlib.image import imread
    rows = bench.rows([train_record("sync-seed", "none", 8, 1.0),
                       train_record("sync-seed", "average every 10", 8, 1.1, alternated={"sync none": 0.95})])
    ratios, = plot(rows, folder=tmp_path)
    plain, = plot(bench.rows([train_record("sync-seed", "none", 8, 1.0),
                              train_record("sync-seed", "average every 10", 8, 1.1)]), folder=tmp_path / "plain")
    assert ratios.name == plain.name == "scaling_sync_seed_i8_e100_n512.png"
    assert imread(ratios).shape == imread(plain).shape and (imread(ratios) != imread(plain)).any()


def test_the_gil_figure_takes_the_alternated_speedups_where_every_row_has_one(tmp_path):
    from matplotlib.image import imread

    def figure(folder, **alternated):
        rows = bench.rows([train_record("gil-seed", "threads/numba", 1, 0.5),
                           train_record("gil-seed", "threads/numba", 2, 0.8, **alternated)])
        path, = plot(rows, folder=tmp_path / folder)
        return imread(path)

    assert (figure("paired", alternated={"threads/numba, N = 1": 1.9}) != figure("unpaired")).any()


def test_seed_f32_has_no_serial_baseline_of_its_own(records):
    r = by(bench.rows(records), "backends-seed-f32", "threads/numba", 2)
    assert r.speedup is None
    assert bench.table([r]).splitlines()[2].split()[6:9] == ["-", "-", "80.0"]


def test_barrier_rows_use_round_time(records):
    rows = bench.barrier_rows(records)
    assert [(b.label, b.parties) for b in rows][:2] == [("ConditionBarrier", 2), ("ConditionBarrier", 8)]
    assert rows[0].round_s == pytest.approx(20e-6)
    assert rows[-1].round_s == pytest.approx(150e-6)          # the coordinator's own per-round figure


def test_table_lists_every_row(records):
    text = bench.table(bench.rows(records), bench.barrier_rows(records))
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["group", "what", "N", "workers"]
    row = next(line for line in lines if line.startswith("backends-seed ") and "threads/numba" in line
               and " 4 " in line)
    assert row.split()[2:] == ["4", "2", "1.25", "320", "1.60", "0.80", "32.0"]
    assert any(line.split()[:4] == ["barrier-parties-2", "ConditionBarrier", "2", "20.0"] for line in lines)


def test_plots_are_named_for_what_they_compare(plotted):
    names = {p.name for p in plotted}
    assert {"scaling_backends_seed_e100_n512.png", "scaling_gil_seed_e100_n512.png",
            "scaling_sync_seed_i8_e100_n512.png", "scaling_peers_seed_i8_e100_n512.png",
            "scaling_growth_threads_i2.png", "scaling_barrier_rounds.png"} <= names
    for p in plotted:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_accepts_a_path_a_dict_or_a_list(records, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": records}))
    assert bench.load(path) == bench.load(str(path)) == bench.load({"benchmarks": records}) == records


def test_main_prints_the_report_and_writes_figures(records, tmp_path, capsys):
    path = tmp_path / "results.json"
    records = [r for r in records if r["group"] in ("backends-seed", "barrier-parties-2")]
    path.write_text(json.dumps({"benchmarks": records + [{"group": None, "name": "other", "extra_info": {},
                                                          "stats": {"median": 1.0}}]}))
    assert bench.main([str(path), "--plots", str(tmp_path / "Plots")]) == 0
    out = capsys.readouterr().out
    assert "inst-epochs/s" in out and "round µs" in out
    assert (tmp_path / "Plots" / "scaling_backends_seed_e100_n512.png").exists()
    assert bench.main([str(path), "--no-plots"]) == 0
    assert "wrote" not in capsys.readouterr().out


def test_report_without_fastffnn_benchmarks_says_so():
    text, paths = bench.report([], plots=None)
    assert "no fastffnn benchmarks" in text and paths == []
