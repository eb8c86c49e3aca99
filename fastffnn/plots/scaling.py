"""The scaling report's figures: throughput and speedup against instances, bar charts of the
other benchmark areas, barrier round time against parties.  Rows come from
``fastffnn.reports.scaling.rows`` / ``barrier_rows``."""
from __future__ import annotations

from pathlib import Path

from ..reports.scaling import BASELINE


def _figure(ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5.5 * ncols, 4.2), layout="constrained")
    FigureCanvasAgg(fig)        # Agg, without touching pyplot's global backend
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _log2_x(ax, values: list) -> None:
    """A base-2 x axis ticked at the values themselves, so 1 and 2 stay apart beside 16, 32 and 48."""
    from matplotlib.ticker import NullLocator
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())


def _lines(ax, members: list, value, ylabel: str) -> None:
    for label in dict.fromkeys(r.label for r in members):
        pts = sorted((r.instances, value(r)) for r in members if r.label == label and value(r) is not None)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    _log2_x(ax, sorted({r.instances for r in members}))
    ax.set_xlabel("instances N")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot(train: list, barriers: list = (), folder="Plots") -> list:
    """Write the figures; returns their paths.  Backends and GIL groups: throughput and speedup vs
    instances per backend/kernel (``scaling_<area>_<workload>_e<epochs>_n<samples>.png``; the gil
    area is the GIL-vs-nogil figure; where every row at N > 1 was timed alternated with its label
    at N = 1, the speedup is that one).  Other groups: a bar chart (``scaling_<area>_..._i<N>...``;
    growth in GFLOP/s; a group with rows timed alternated, each such row's ratio to what it
    alternated with; the rest in % of roofline).  Barriers: round time vs parties
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
            if all(r.alternated for r in members if r.instances > 1):
                # each row timed alternated with its own label at N = 1 (bench_gil): that speedup
                _lines(right, members, lambda r: 1.0 if r.instances == 1 else next(iter(r.alternated.values())),
                       "speedup over its own N = 1 (alternated)")
            else:
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
                def what(r):
                    return r.label if len(ns) == 1 else f"{r.label}, N = {r.instances}"

                paired = [(f"{what(r)} ÷ {other}", ratio) for r in members for other, ratio in
                          (r.alternated or {}).items()]
                if paired:      # the rows' paired ratios rather than their medians minutes apart
                    labels, values = [label for label, _ in paired], [ratio for _, ratio in paired]
                    xlabel = "throughput ratio (alternated)"
                    ax.axvline(1.0, color="grey", linestyle="--")
                else:
                    labels, values, xlabel = [what(r) for r in members], [r.pct_roofline for r in members], \
                        "% of roofline"
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
        # an open marker and a dash of its own per barrier: the Condition and RLock barriers' rounds
        # nearly coincide, and a line drawn over the other would hide it
        for i, label in enumerate(dict.fromkeys(b.label for b in barriers)):
            pts = sorted((b.parties, b.round_s * 1e6) for b in barriers if b.label == label)
            ax.plot(*zip(*pts), marker="osD^vP"[i % 6], ms=8 - i % 3, linestyle=("-", "--", ":", "-.")[i % 4],
                    markerfacecolor="none", label=label)
        _log2_x(ax, sorted({b.parties for b in barriers}))
        ax.set_yscale("log")
        ax.minorticks_off()
        ax.set(xlabel="parties", ylabel="one allreduce round, µs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.suptitle("barrier: one allreduce round against parties")
        paths.append(folder / "scaling_barrier_rounds.png")
        fig.savefig(paths[-1], dpi=110)
    return paths


