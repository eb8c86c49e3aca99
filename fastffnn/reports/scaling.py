"""The scaling report: pytest-benchmark results turned into a table and ``Plots/scaling_*.png``.

    pytest benchmarks --benchmark-only --benchmark-json=results.json   # prints the report at the end
    python -m fastffnn.bench results.json                               # the same, from the saved file

It reads what ``benchmarks/common.py`` writes into each benchmark's ``extra_info`` -- the settings
(workload, backend/kernel label, instances, epochs, FLOPs per epoch, the roofline measured as its
benchmark file started) -- and
the median of its timed calls.  Training benchmarks become rows of throughput (instance-epochs per
second over all instances), speedup over the serial backend at N = 1 on the same workload, parallel
efficiency (speedup ÷ the cores N instances can use) and % of roofline (PERFORMANCE.md); barrier
benchmarks become the median time of one round.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BASELINE", "Row", "BarrierRow", "load", "derived", "rows", "barrier_rows", "table", "plot",
           "report", "main"]

BASELINE = ("serial/numba", 1)      # (label, instances) every speedup is measured against


def load(source) -> list:
    """The benchmark records of a ``--benchmark-json`` file (path), its parsed dict, or a list."""
    if isinstance(source, (str, os.PathLike)):
        source = json.loads(Path(source).read_text())
    if isinstance(source, dict):
        source = source["benchmarks"]
    return list(source)


def derived(info: dict, median: float, seen: dict | None = None, dgemm_gflops: float | None = None) -> dict:
    """Throughput, % of roofline and FLOP rate of one training benchmark; with ``seen`` (workload,
    label, instances) -> throughput, also speedup and efficiency once the baseline is in it.  The
    roofline is the one recorded with the benchmark, or, given ``dgemm_gflops``, the same for
    that dgemm rate (the report uses the best of the run for every row)."""
    throughput = info["instances"] * info["epochs"] / median
    roofline = info["roofline_instance_epochs_per_s"]
    if dgemm_gflops is not None and info.get("dgemm_gflops"):
        roofline *= dgemm_gflops / info["dgemm_gflops"]
    out = {"instance_epochs_per_s": throughput, "flops_per_s": throughput * info["flops_per_epoch"],
           "pct_roofline": 100.0 * throughput / roofline}
    if seen is not None:
        seen[info["workload"], info["label"], info["instances"]] = throughput
        base = seen.get((info["workload"], *BASELINE))
        if base:
            out["speedup"] = throughput / base
            out["efficiency"] = out["speedup"] / min(info["instances"], info["cores"])
    return out


@dataclass
class Row:
    """One training benchmark of the report."""

    group: str
    area: str
    workload: str
    label: str
    instances: int
    workers: int | None
    epochs: int
    n_samples: int
    cores: int
    median: float
    throughput: float
    pct_roofline: float
    flops_per_s: float
    speedup: float | None = None
    efficiency: float | None = None
    own_baseline: bool = False      # speedup over this label's own N = 1 (no serial N = 1 run)
    dgemm_gflops: float | None = None   # the roofline's dgemm rate (the best of the run)
    peer: bool = False
    note: str = ""


@dataclass
class BarrierRow:
    """One barrier benchmark: the median time of one allreduce round."""

    group: str
    label: str
    parties: int
    round_s: float
    note: str = ""


def _median(record: dict) -> float:
    return record["stats"]["median"]


def best_dgemm(benchmarks) -> float | None:
    """The best single-thread dgemm GFLOP/s recorded in the run (each benchmark file measures it
    as it starts: the machine's speed may change during a run, and the roofline is its best)."""
    rates = [b["extra_info"]["dgemm_gflops"] for b in load(benchmarks)
             if b.get("extra_info", {}).get("kind") == "train" and b["extra_info"].get("dgemm_gflops")]
    return max(rates, default=None)


def rows(benchmarks) -> list:
    """Training rows with speedups and per-area notes, in the order the benchmarks ran; % of
    roofline against the best dgemm of the run (``best_dgemm``) for every row."""
    train = [b for b in load(benchmarks) if b.get("extra_info", {}).get("kind") == "train"]
    dgemm = best_dgemm(train)
    seen: dict = {}
    for b in train:
        derived(b["extra_info"], _median(b), seen)
    out = []
    for b in train:
        info = b["extra_info"]
        figures = derived(info, _median(b), dgemm_gflops=dgemm)
        row = Row(b["group"], info["area"], info["workload"], info["label"], info["instances"],
                  info.get("workers"), info["epochs"], info["n_samples"], info["cores"], _median(b),
                  figures["instance_epochs_per_s"], figures["pct_roofline"], figures["flops_per_s"],
                  peer=bool(info.get("peer")), dgemm_gflops=dgemm)
        base = seen.get((row.workload, *BASELINE))
        if base is None:
            base, row.own_baseline = seen.get((row.workload, row.label, 1)), True
        if base:
            row.speedup = row.throughput / base
            row.efficiency = row.speedup / min(row.instances, row.cores)
        if info.get("spawn_s") is not None:
            row.note = f"spawn+join {info['spawn_s']:.2f} s"
        out.append(row)
    _notes(out)
    return out


def _notes(out: list) -> None:
    """Comparisons inside a group: sync cost vs no sync, growth vs seed, fastffnn vs each peer."""
    for group in dict.fromkeys(r.group for r in out):
        members = [r for r in out if r.group == group]
        plain = next((r for r in members if r.label.endswith("none")), None)
        seed = next((r for r in members if r.workload == "seed"), None)
        ours = max((r.throughput for r in members if not r.peer), default=None)
        for r in members:
            if r.area == "sync" and plain is not None and r is not plain:
                r.note = f"{100 * (r.median / plain.median - 1):+.1f} % time vs sync none"
            elif r.area == "growth":
                r.note = f"{r.flops_per_s / 1e9:.2f} GFLOP/s" + (
                    f", {r.flops_per_s / seed.flops_per_s:.2f}x seed's" if seed is not None else "")
            elif r.area == "peers" and r.peer and ours:
                r.note = f"best fastffnn is {ours / r.throughput:.2f}x this"


def barrier_rows(benchmarks) -> list:
    out = []
    for b in load(benchmarks):
        info = b.get("extra_info", {})
        if info.get("kind") == "barrier":
            round_s = info.get("round_s") or _median(b) / info.get("rounds_per_call", 1)
            out.append(BarrierRow(b["group"], info["label"], info["parties"], round_s, info.get("note", "")))
    return out


def _format(header: list, lines: list, align: str) -> str:
    """A plain-text table; ``align`` has one letter per column: l(eft) or r(ight)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]

    def fmt(cells) -> str:
        return "  ".join(str(c).ljust(w) if a == "l" else str(c).rjust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def _num(value, spec: str, mark: str = "") -> str:
    return "-" if value is None else format(value, spec) + mark


def table(train: list, barriers: list = ()) -> str:
    """The report's text: one table of training throughput, one of barrier rounds."""
    parts = []
    if train:
        lines = [[r.group, r.workload if r.area == "growth" else r.label, r.instances, _num(r.workers, "d"),
                  _num(r.median, ".4g"), _num(r.throughput, ",.0f"),
                  _num(r.speedup, ".2f", "*" if r.own_baseline else ""), _num(r.efficiency, ".2f"),
                  _num(r.pct_roofline, ".1f"), r.note] for r in train]
        parts.append(_format(["group", "what", "N", "workers", "median s", "inst-epochs/s", "speedup",
                              "efficiency", "% roofline", "note"], lines, "llrrrrrrrl"))
        foot = [f"speedup: over {BASELINE[0]} at N = {BASELINE[1]} on the same workload; efficiency: "
                f"speedup / min(N, cores)"]
        if train[0].dgemm_gflops is not None:
            foot.append(f"% roofline: against {train[0].cores} cores x the best single-thread dgemm of the "
                        f"run, {train[0].dgemm_gflops:.1f} GFLOP/s")
        if any(r.own_baseline and r.speedup is not None for r in train):
            foot.append("*: over the same backend at N = 1 (no serial N = 1 run of that workload here)")
        parts.append("\n".join(foot))
    if barriers:
        lines = [[b.group, b.label, b.parties, f"{b.round_s * 1e6:,.1f}", b.note] for b in barriers]
        parts.append(_format(["group", "barrier", "parties", "round µs", "note"], lines, "llrrl"))
    return "\n\n".join(parts) + "\n"


def _figure(ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5.5 * ncols, 4.2), layout="constrained")
    FigureCanvasAgg(fig)        # Agg, without touching pyplot's global backend
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _lines(ax, members: list, value, ylabel: str) -> None:
    for label in dict.fromkeys(r.label for r in members):
        pts = sorted((r.instances, value(r)) for r in members if r.label == label and value(r) is not None)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xticks(sorted({r.instances for r in members}))
    ax.set_xlabel("instances N")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot(train: list, barriers: list = (), folder="Plots") -> list:
    """Write the figures; returns their paths.  Backends and GIL groups: throughput and speedup vs
    instances per backend/kernel (``scaling_<area>_<workload>_e<epochs>_n<samples>.png``; the gil
    area is the GIL-vs-nogil figure).  Other groups: a bar chart (``scaling_<area>_..._i<N>...``;
    growth in GFLOP/s, the rest in % of roofline).  Barriers: round time vs parties
    (``scaling_barrier_rounds.png``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for group in dict.fromkeys(r.group for r in train):
        members = [r for r in train if r.group == group]
        first = members[0]
        ns = sorted({r.instances for r in members})
        if first.area in ("backends", "gil") and len(ns) > 1:
            fig, (left, right) = _figure(2)
            _lines(left, members, lambda r: r.throughput, "instance-epochs / s")
            left.axhline(first.throughput / first.pct_roofline * 100, color="grey", linestyle="--",
                         label="roofline")
            _lines(right, members, lambda r: r.speedup, f"speedup over {BASELINE[0]}, N = 1")
            right.plot(ns, [min(n, first.cores) for n in ns], color="grey", linestyle="--", label="ideal")
            left.legend(fontsize="small")
            right.legend(fontsize="small")
            name = f"scaling_{first.area}_{first.workload}_e{first.epochs}_n{first.n_samples}.png"
        else:
            fig, (ax,) = _figure()
            if first.area == "growth":
                labels = [r.workload for r in members]
                values, xlabel = [r.flops_per_s / 1e9 for r in members], "GFLOP/s (throughput x work)"
                name = f"scaling_growth_threads_i{first.instances}.png"
            else:
                labels = [r.label if len(ns) == 1 else f"{r.label}, N = {r.instances}" for r in members]
                values, xlabel = [r.pct_roofline for r in members], "% of roofline"
                name = (f"scaling_{first.area}_{first.workload}_i{max(ns)}_e{first.epochs}"
                        f"_n{first.n_samples}.png")
            ax.barh(labels, values)
            ax.invert_yaxis()
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3, axis="x")
        fig.suptitle(group)
        paths.append(folder / name)
        fig.savefig(paths[-1], dpi=110)
    if barriers:
        fig, (ax,) = _figure()
        for label in dict.fromkeys(b.label for b in barriers):
            pts = sorted((b.parties, b.round_s * 1e6) for b in barriers if b.label == label)
            ax.plot(*zip(*pts), marker="o", label=label)
        parties = sorted({b.parties for b in barriers})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(parties, [str(p) for p in parties])
        ax.minorticks_off()
        ax.set(xlabel="parties", ylabel="one allreduce round, µs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        paths.append(folder / "scaling_barrier_rounds.png")
        fig.savefig(paths[-1], dpi=110)
    return paths


def report(benchmarks, plots=None) -> tuple:
    """(text, figure paths) of benchmark records; ``plots`` is the figures' folder, None for none."""
    records = load(benchmarks)
    train, barriers = rows(records), barrier_rows(records)
    paths = plot(train, barriers, plots) if plots is not None and (train or barriers) else []
    text = table(train, barriers) if train or barriers else "no fastffnn benchmarks in these results\n"
    return text + "".join(f"wrote {p}\n" for p in paths), paths


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastffnn.bench", description=__doc__.split("\n")[0],
                                     epilog="Write the JSON with: pytest benchmarks --benchmark-only "
                                            "--benchmark-json=results.json")
    parser.add_argument("json", nargs="+", help="pytest-benchmark JSON file(s) (--benchmark-json)")
    parser.add_argument("--plots", default="Plots", help="folder for the figures (default: Plots)")
    parser.add_argument("--no-plots", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    records = [record for path in args.json for record in load(path)]
    text, _ = report(records, None if args.no_plots else args.plots)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
