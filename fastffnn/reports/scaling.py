"""The scaling report: pytest-benchmark results turned into a table (here) and
``Plots/scaling_*.png`` (``fastffnn.plots.scaling``).

    pytest benchmarks --benchmark-only --benchmark-json=results.json   # prints the report at the end
    python -m fastffnn.reports.scaling results.json                     # the same, from the saved file

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

__all__ = ["BASELINE", "Row", "BarrierRow", "LatencyRow", "load", "latency_rows", "derived", "best_gemm", "rows", "barrier_rows", "table", "report", "main"]

BASELINE = ("serial/numba", 1)      # (label, instances) every speedup is measured against


def load(source) -> list:
    """The benchmark records of a ``--benchmark-json`` file (path), its parsed dict, or a list."""
    if isinstance(source, (str, os.PathLike)):
        source = json.loads(Path(source).read_text())
    if isinstance(source, dict):
        source = source["benchmarks"]
    return list(source)


def _gemm_key(dtype: str | None) -> str:
    # the roofline of a float32 row is the sgemm one, of every other row the dgemm one
    return "sgemm_gflops" if dtype == "float32" else "dgemm_gflops"


def derived(info: dict, median: float, gemm_gflops: float | None = None) -> dict:
    """Throughput, % of roofline and FLOP rate of one training benchmark.  The roofline is the one
    recorded with the benchmark (of its dtype's gemm), or, given ``gemm_gflops``, the same for that
    gemm rate (the report uses the best of the run of the row's dtype for every row).  Speedups
    need the other rows: ``rows``."""
    throughput = info["instances"] * info["epochs"] / median
    roofline = info["roofline_instance_epochs_per_s"]
    recorded = info.get(_gemm_key(info.get("dtype")))
    if gemm_gflops is not None and recorded:
        roofline *= gemm_gflops / recorded
    return {"instance_epochs_per_s": throughput, "flops_per_s": throughput * info["flops_per_epoch"],
            "pct_roofline": 100.0 * throughput / roofline}


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
    dtype: str = "float64"
    gemm_gflops: float | None = None    # the roofline's gemm rate of this dtype (the best of the run)
    peer: bool = False
    # label -> that run's time over this row's, round by round (benchmarks' time_alternated)
    alternated: dict | None = None
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


def best_gemm(benchmarks, dtype: str = "float64") -> float | None:
    """The best single-thread gemm GFLOP/s of ``dtype`` (dgemm for float64, sgemm for float32)
    recorded in the run (each benchmark file measures both as it starts: the machine's speed may
    change during a run, and the roofline is its best)."""
    key = _gemm_key(dtype)
    rates = [b["extra_info"][key] for b in load(benchmarks)
             if b.get("extra_info", {}).get("kind") == "train" and b["extra_info"].get(key)]
    return max(rates, default=None)


def rows(benchmarks) -> list:
    """Training rows with speedups and per-area notes, in the order the benchmarks ran; % of
    roofline against the best gemm of the run of each row's dtype (``best_gemm``)."""
    train = [b for b in load(benchmarks) if b.get("extra_info", {}).get("kind") == "train"]
    best = {dtype: best_gemm(train, dtype) for dtype in ("float64", "float32")}
    out = []
    for b in train:
        info = b["extra_info"]
        dtype = "float32" if info.get("dtype") == "float32" else "float64"
        figures = derived(info, _median(b), gemm_gflops=best[dtype])
        row = Row(b["group"], info["area"], info["workload"], info["label"], info["instances"],
                  info.get("workers"), info["epochs"], info["n_samples"], info["cores"], _median(b),
                  figures["instance_epochs_per_s"], figures["pct_roofline"], figures["flops_per_s"],
                  peer=bool(info.get("peer")), dtype=dtype, gemm_gflops=best[dtype],
                  alternated=info.get("alternated"))
        if info.get("overhead_s") is not None:
            row.note = f"outside compute {info['overhead_s']:.3f} s"
        out.append(row)
    _speedups(out)
    _notes(out)
    return out


def _speedups(out: list) -> None:
    """Speedup over the serial backend at N = 1 on the same workload (else over the row's own
    label at N = 1: ``own_baseline``) and parallel efficiency, computed here only."""
    throughput = {(r.workload, r.label, r.instances): r.throughput for r in out}
    for row in out:
        base = throughput.get((row.workload, *BASELINE))
        if base is None:
            base, row.own_baseline = throughput.get((row.workload, row.label, 1)), True
        if base:
            row.speedup = row.throughput / base
            row.efficiency = row.speedup / min(row.instances, row.cores)


def _notes(out: list) -> None:
    """Comparisons inside a group: sync cost vs no sync, growth vs seed, fastffnn vs each peer and
    each fastffnn row vs the best peer, Adam vs SGD; a row timed alternated with other runs gives
    its speed relative to each, paired by round, instead."""
    for group in dict.fromkeys(r.group for r in out):
        members = [r for r in out if r.group == group]
        plain = next((r for r in members if r.label.endswith("none")), None)
        seed = next((r for r in members if r.workload == "seed"), None)
        ours = max((r.throughput for r in members if not r.peer), default=None)
        best_peer = max((r for r in members if r.peer), key=lambda r: r.throughput, default=None)
        threads = next((r for r in members if r.label.startswith("threads")), None)
        sgd = next((r for r in members if r.label.endswith("sgd")), None)
        for r in members:
            if r.alternated:
                r.note = ", ".join(f"{ratio:.2f}x {label}'s" for label, ratio in r.alternated.items()) + \
                    " throughput, alternated round by round"
            elif r.area == "sync" and plain is not None and r is not plain:
                r.note = f"{100 * (r.median / plain.median - 1):+.1f} % time vs sync none"
            elif r.area == "growth":
                r.note = f"{r.flops_per_s / 1e9:.2f} GFLOP/s" + (
                    f", {r.flops_per_s / seed.flops_per_s:.2f}x seed's" if seed is not None else "")
            elif r.area == "peers" and r.peer and ours:
                r.note = f"best fastffnn is {ours / r.throughput:.2f}x this"
            elif r.area == "peers" and best_peer is not None:
                r.note = f"{r.throughput / best_peer.throughput:.2f}x the best peer ({best_peer.label})"
            elif r.area == "runtime" and threads is not None and r is not threads:
                r.note = f"{r.throughput / threads.throughput:.2f}x threads"
            elif r.area == "optimizers" and sgd is not None and r is not sgd:
                r.note = f"{r.throughput / sgd.throughput:.2f}x SGD's throughput"


@dataclass
class LatencyRow:
    """One latency benchmark: the median seconds of what it times (``latency_s`` in its
    ``extra_info`` when it times less than its whole call)."""

    group: str
    label: str
    seconds: float


def latency_rows(benchmarks) -> list:
    return [LatencyRow(b["group"], b["extra_info"]["label"], b["extra_info"].get("latency_s") or _median(b))
            for b in load(benchmarks) if b.get("extra_info", {}).get("kind") == "latency"]


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


def table(train: list, barriers: list = (), latencies: list = ()) -> str:
    """The report's text: one table of training throughput, one of barrier rounds, one of
    latencies."""
    parts = []
    if train:
        lines = [[r.group, r.workload if r.area == "growth" else r.label, r.instances, _num(r.workers, "d"),
                  _num(r.median, ".4g"), _num(r.throughput, ",.0f" if r.throughput >= 100 else ".3g"),
                  _num(r.speedup, ".2f", "*" if r.own_baseline else ""), _num(r.efficiency, ".2f"),
                  _num(r.pct_roofline, ".1f"), r.note] for r in train]
        parts.append(_format(["group", "what", "N", "workers", "median s", "inst-epochs/s", "speedup",
                              "efficiency", "% roofline", "note"], lines, "llrrrrrrrl"))
        foot = [f"speedup: over {BASELINE[0]} at N = {BASELINE[1]} on the same workload; efficiency: "
                f"speedup / min(N, cores)"]
        rates = {r.dtype: r.gemm_gflops for r in train if r.gemm_gflops is not None}
        if rates:
            names = {"float64": "dgemm", "float32": "sgemm"}
            foot.append(f"% roofline: against {train[0].cores} cores x the best single-thread gemm of the row's "
                        f"dtype in the run, " + ", ".join(f"{names[d]} {g:.1f} GFLOP/s" for d, g in sorted(rates.items(),
                                                                                                  reverse=True)))
        if any(r.own_baseline and r.speedup is not None for r in train):
            foot.append("*: over the same backend at N = 1 (no serial N = 1 run of that workload here)")
        parts.append("\n".join(foot))
    if barriers:
        lines = [[b.group, b.label, b.parties, f"{b.round_s * 1e6:,.1f}", b.note] for b in barriers]
        parts.append(_format(["group", "barrier", "parties", "round µs", "note"], lines, "llrrl"))
    if latencies:
        lines = [[r.group, r.label, f"{r.seconds * 1e3:,.1f}"] for r in latencies]
        parts.append(_format(["group", "what", "median ms"], lines, "llr"))
    return "\n\n".join(parts) + "\n"


def report(benchmarks, plots=None) -> tuple:
    """(text, figure paths) of benchmark records; ``plots`` is the figures' folder, None for none."""
    records = load(benchmarks)
    train, barriers, latencies = rows(records), barrier_rows(records), latency_rows(records)
    from ..plots.scaling import plot       # matplotlib only when figures are wanted
    paths = plot(train, barriers, plots) if plots is not None and (train or barriers) else []
    text = (table(train, barriers, latencies) if train or barriers or latencies
            else "no fastffnn benchmarks in these results\n")
    return text + "".join(f"wrote {p}\n" for p in paths), paths


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastffnn.reports.scaling", description=__doc__.split("\n")[0],
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
