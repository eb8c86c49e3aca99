"""fastffnn.plots: every kind returns a labelled Figure; save names and writes PNGs; draw writes
every kind a result can show and says which it skipped."""
import copy
import inspect
import io
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.image import imread

import fastffnn as ff
import fastffnn.plots as fp
from fastffnn import align
from fastffnn.network import init_params

INSTANCES, EPOCHS, SYNC_EVERY, HIDDEN = 3, 30, 10, (6, 4)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RESULT_KINDS = ("convergence", "network", "heatmap", "alignment")     # the kinds that draw a TrainResult


def _data(n: int = 80, features: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features))
    return X, (X @ rng.normal(size=features) > 0).astype(int)


def _with_snapshots(res, epochs: dict) -> ff.TrainResult:
    """A copy of ``res`` whose history holds ``epochs`` ({epoch: (N, P)}) as its snapshots."""
    out = copy.copy(res)
    out.history = copy.copy(res.history)
    out.history.snapshots = epochs
    return out


@pytest.fixture(scope="module")
def data():
    X, y = _data()
    return X[:60], y[:60], X[60:], y[60:]


@pytest.fixture(scope="module")
def result(data):
    """A synced run with validation data and snapshots at epochs 0, 15 and 30 (taken by train
    where it can, else built: the exact initial weights and the final ones)."""
    X, y, X_val, y_val = data
    kwargs = dict(hidden=HIDDEN, instances=INSTANCES, epochs=EPOCHS, sync="average", sync_layers="last", sync_every=SYNC_EVERY,
                  backend="serial", validation=(X_val, y_val), seed=2)
    if "snapshots" in inspect.signature(ff.train).parameters:
        return ff.train(X, y, snapshots=[0, 15, EPOCHS], **kwargs)
    res = ff.train(X, y, **kwargs)
    initial, _ = init_params(res.ensemble.topology, [np.random.SeedSequence(2, spawn_key=(k,))
                                                     for k in range(INSTANCES)], res.ensemble.params.dtype)
    middle = (initial + res.ensemble.params) / 2            # a stand-in third snapshot
    return _with_snapshots(res, {0: initial, 15: middle, EPOCHS: res.ensemble.params.copy()})


@pytest.fixture(scope="module")
def bare(result):
    """The same run without snapshots."""
    return _with_snapshots(result, {})


@pytest.fixture(scope="module", autouse=True)
def fonts_loaded(result, data):
    """Draw every kind once before any test: matplotlib keeps each font file it has used open
    (its font cache, for the life of the process), which ``no_residue`` would otherwise count
    against the first test that renders text."""
    for kind in RESULT_KINDS:
        plot = fp.KINDS[kind]
        figure = plot(result, X=data[2], y=data[3]) if kind == "alignment" else plot(result)
        figure.savefig(io.BytesIO(), format="png", dpi=fp.DPI)


def _titles(fig: Figure) -> list:
    return [ax.get_title() for ax in fig.axes]


def _colourbars(fig: Figure) -> list:
    return [ax for ax in fig.axes if hasattr(ax, "_colorbar")]


def test_convergence_shows_loss_and_validation_accuracy(result):
    fig = fp.convergence.plot(result)
    assert isinstance(fig, Figure)
    loss, acc = fig.axes
    assert loss.get_yscale() == "log" and loss.get_title() == "Training loss"
    assert "loss" in loss.get_ylabel() and "accuracy" in acc.get_ylabel() and acc.get_xlabel() == "epoch"
    assert f"{INSTANCES} instances" in fig.get_suptitle() and "sync=average" in fig.get_suptitle()
    labels = [t.get_text() for t in loss.get_legend().get_texts()]
    assert labels == [f"instance {k}" for k in range(INSTANCES)] + ["global loss (mean over instances)",
                                                                     "sync points (average)"]
    # one curve per instance over all epochs; the global loss and one vertical line per sync point
    curves = [line for line in loss.get_lines() if len(line.get_xdata()) == EPOCHS]
    assert len(curves) == INSTANCES
    np.testing.assert_array_equal(curves[0].get_ydata(), result.history.losses[0])
    syncs = [line for line in loss.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in syncs] == list(result.history.sync_epochs)
    ensemble = [t.get_text() for t in acc.get_legend().get_texts()][-1]
    assert ensemble.startswith("ensemble")


def test_convergence_without_validation_and_with_many_instances_and_syncs(data):
    X, y, _, _ = data
    res = ff.train(X, y, hidden=(3,), instances=12, epochs=30, sync="average", sync_layers="last", sync_every=1, backend="serial")
    fig = fp.convergence.plot(res)
    loss, bar = fig.axes                # no accuracy axes, a colour bar for 12 instances
    assert bar in _colourbars(fig) and bar.get_ylabel() == "instance index"
    assert not [line for line in loss.get_lines() if line.get_linestyle() == ":"]     # 30 syncs: rug ticks
    assert [t.get_text() for t in loss.get_legend().get_texts()][0] == "instances"


def test_network_draws_one_graph_per_snapshot_with_one_symmetric_colour_bar(result):
    fig = fp.network.plot(result, instance=1)
    epochs = sorted(result.history.snapshots)
    graphs = [ax for ax in fig.axes if ax not in _colourbars(fig)]
    assert _titles(fig)[:len(epochs)] == [f"epoch {e}" for e in epochs]
    assert len(graphs) == len(epochs) and len(_colourbars(fig)) == 1
    norm = _colourbars(fig)[0]._colorbar.norm
    assert norm.vmin == -norm.vmax > -np.inf
    assert norm.vmax == max(np.abs(snap[1]).max() for snap in result.history.snapshots.values())
    for ax in graphs:
        assert ax.get_xlabel() == "layer" and ax.get_ylabel()
        assert [t.get_text() for t in ax.get_xticklabels()] == ["input\n5 units", "hidden 1\n6 units",
                                                                 "hidden 2\n4 units", "output\n1 unit"]
    assert "Instance 1" in fig.get_suptitle() and "all 30, all 24, all 4" in fig.get_suptitle()


def test_network_draws_only_the_strongest_edges_of_wide_layers_and_says_so(result):
    fig = fp.network.plot(result, epochs=[EPOCHS], max_edges=5)
    (ax,) = [ax for ax in fig.axes if ax not in _colourbars(fig)]
    (edges,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(edges.get_segments()) == 5 + 5 + 4
    assert "strongest 5 of 30, strongest 5 of 24, all 4" in fig.get_suptitle()
    # the drawn edges are each layer's largest |w|
    row = result.history.snapshots[EPOCHS][0]
    weights, _ = result.ensemble.topology.views(row)
    expected = np.concatenate([np.sort(np.abs(w).ravel())[-5:] for w in weights])
    vmax = _colourbars(fig)[0]._colorbar.norm.vmax
    thin, thick = fp.network.EDGE_WIDTH
    drawn = (np.asarray(edges.get_linewidths()) - thin) / (thick - thin) * vmax
    np.testing.assert_allclose(np.sort(drawn), np.sort(expected), rtol=1e-12)
    G = fp.network.graph(result.ensemble.topology, row)
    assert G.number_of_edges() == 30 + 24 + 4 and G.nodes[(1, 0)]["layer"] == 1
    assert G.edges[(0, 2), (1, 3)]["weight"] == weights[0][2, 3]


def test_network_without_snapshots_says_how_to_take_them(bare):
    with pytest.raises(ValueError, match=r"no weight snapshots.*snapshots=\[0, 500, 1000\]"):
        fp.network.plot(bare)


def test_network_rejects_epochs_and_instances_it_does_not_have(result):
    with pytest.raises(ValueError, match=r"snapshot epochs among \[0, 15, 30\]. Got \[7\] instead"):
        fp.network.plot(result, epochs=[7])
    with pytest.raises(ValueError, match=r"'instance' parameter of network.plot .* \[0, 2\].*Got 3 instead"):
        fp.network.plot(result, instance=3)


def test_heatmap_shows_both_instances_and_their_difference_per_layer(result):
    fig = fp.heatmap.plot(result, pair=(0, 2))
    layers = len(HIDDEN) + 1
    images = [ax for ax in fig.axes if ax not in _colourbars(fig)]
    assert len(images) == 3 * layers and len(_colourbars(fig)) == layers
    for ax in images:
        assert ax.get_xlabel() == "fan_out unit (index)" and ax.get_ylabel() == "fan_in unit (index)"
    assert images[0].get_title() == "layer 1 (5 → 6): instance 0"
    assert images[2].get_title() == "layer 1 (5 → 6): instance 0 − instance 2"
    wa, wb = result.ensemble[0].weights[1], result.ensemble[2].weights[1]
    row = images[3:6]
    np.testing.assert_array_equal(row[0].get_images()[0].get_array(), wa)
    np.testing.assert_array_equal(row[2].get_images()[0].get_array(), wa - wb)
    norms = [ax.get_images()[0].norm for ax in row]
    assert all(n.vmin == -n.vmax == -norms[0].vmax for n in norms)          # one symmetric scale a layer
    assert norms[0].vmax == max(np.abs(wa).max(), np.abs(wb).max(), np.abs(wa - wb).max())
    # sync="average" over the output layer leaves it identical in every instance, and the figure says so
    assert "identical" in " ".join(t.get_text() for t in images[-1].texts)
    with pytest.raises(ValueError, match=r"'pair' parameter of heatmap.plot .*Got 5 instead"):
        fp.heatmap.plot(result, pair=(0, 5))


@pytest.mark.parametrize("with_labels", [False, True])
def test_alignment_plots_every_pair_before_and_after(result, data, with_labels):
    _, _, X_val, y_val = data
    fig = fp.alignment.plot(result, X_val, y_val if with_labels else None)
    pairs = INSTANCES * (INSTANCES - 1) // 2
    assert len(fig.axes) == (2 if with_labels else 1)
    ax = fig.axes[0]
    assert f"{pairs} pairs of {INSTANCES} instances" in fig.get_suptitle()
    assert "distance" in ax.get_xlabel() and "agreement" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before alignment", "after alignment"]
    lines, before, after = ax.collections
    assert len(lines.get_segments()) == pairs
    x_before, x_after = before.get_offsets()[:, 0], after.get_offsets()[:, 0]
    params, topology = result.ensemble.params, result.ensemble.topology
    assert x_before[0] == align.distance(topology, params[0], params[1])
    assert (x_after <= x_before).all() and (x_after < x_before).any()
    # alignment keeps each function: the pair's two points share their agreement
    np.testing.assert_array_equal(before.get_offsets()[:, 1], after.get_offsets()[:, 1])
    agree = np.mean(result.ensemble[0].predict(X_val) == result.ensemble[1].predict(X_val))
    assert abs(before.get_offsets()[0, 1] - agree) < 0.5 / len(X_val)


def test_save_writes_a_png_named_by_the_convention(result, tmp_path):
    fig = fp.convergence.plot(result)
    path = fp.save(fig, "convergence", result, tmp_path / "new" / "Plots")
    n = result.config["n_samples"]
    assert path == tmp_path / "new" / "Plots" / f"convergence_serial_average_i{INSTANCES}_e{EPOCHS}_n{n}.png"
    assert fp.filename("heatmap", result) == f"heatmap_serial_average_i{INSTANCES}_e{EPOCHS}_n{n}.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = imread(path).shape
    assert (width, height) == tuple(round(v * fp.DPI) for v in fig.get_size_inches())
    assert width >= 800 and height >= 400
    with pytest.raises(ValueError, match=r"'kind' parameter of filename must be a str among .*Got 'pie'"):
        fp.filename("pie", result)


def test_draw_writes_every_applicable_kind_and_names_what_it_skipped(result, bare, data, tmp_path):
    _, _, X_val, y_val = data
    others = set(fp.KINDS) - set(RESULT_KINDS)         # kinds of other results (benchmarks), if registered
    drawn = fp.draw(result, tmp_path, X=X_val, y=y_val)
    assert [p.name for p in drawn.paths] == [fp.filename(kind, result) for kind in fp.KINDS if kind not in others]
    assert set(drawn.skipped) == others
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE and p.parent == tmp_path for p in drawn.paths)
    drawn = fp.draw(bare, tmp_path / "bare")
    assert [p.name for p in drawn.paths] == [fp.filename("convergence", bare), fp.filename("heatmap", bare)]
    assert set(drawn.skipped) == {"network", "alignment"} | others
    assert "snapshots=" in drawn.skipped["network"] and "pass X" in drawn.skipped["alignment"]
    # a kind asked for by name is drawn or refused, never skipped quietly
    with pytest.raises(ValueError, match="Cannot draw 'network': the result has no weight snapshots"):
        fp.draw(bare, tmp_path / "bare", kinds=["network"])
    with pytest.raises(ValueError, match=r"'kind' parameter of draw must be a str among"):
        fp.draw(bare, tmp_path, kinds=["pie"])


def test_importing_fastffnn_and_align_loads_no_plotting_or_optimisation_library():
    code = ("import sys, fastffnn, fastffnn.align; "
            "print(sorted(m for m in ('matplotlib', 'networkx', 'scipy.optimize', 'fastffnn.plots') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
