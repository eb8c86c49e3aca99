"""Benchmark session: timed or smoke mode, the session's roofline, and the scaling report at the end."""
from __future__ import annotations

import pytest

from fastffnn.reports import scaling

from .common import measure_roofline


def pytest_addoption(parser):
    parser.addoption("--scaling-plots", default="Plots", metavar="DIR",
                     help="folder (under the rootdir unless absolute) for the scaling report's figures; "
                          "'' writes none")


def pytest_configure(config):
    # pyproject's addopts disable benchmarks so that plain `pytest` runs each once as a smoke test;
    # pytest-benchmark refuses --benchmark-only beside --benchmark-disable, so --benchmark-only
    # implies --benchmark-enable (pytest-benchmark reads the options in its own trylast configure).
    if config.getoption("benchmark_only", False):
        config.option.benchmark_enable = True
    config.addinivalue_line("markers", "timed_only: too slow for the smoke run; runs only when timed")


def _timed(config) -> bool:
    session = getattr(config, "_benchmarksession", None)
    return session is not None and not session.disabled


def pytest_collection_modifyitems(config, items):
    if _timed(config):
        return
    slow = [item for item in items if item.get_closest_marker("timed_only")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("timed_only")]


@pytest.fixture(scope="session")
def timed(request) -> bool:
    """True when pytest-benchmark times the calls; False in the smoke run (tiny epochs)."""
    return _timed(request.config)


@pytest.fixture(scope="module")
def roofline(timed):
    """cores × best single-thread numpy dgemm and sgemm GFLOP/s, measured as each benchmark file
    starts (the machine's speed may change during a session); the report takes the best of the run."""
    return measure_roofline(timed)


@pytest.hookimpl(trylast=True)       # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter, config):
    """Print the scaling report (and write its figures) when benchmarks ran timed."""
    session = getattr(config, "_benchmarksession", None)
    if not _timed(config) or not session.benchmarks:
        return
    records = [b.as_dict(include_data=False) for b in session.benchmarks]
    folder = config.getoption("scaling_plots", "Plots")
    text, _ = scaling.report(records, config.rootpath / folder if folder else None)
    terminalreporter.write_sep("-", "fastffnn scaling report")
    terminalreporter.write(text)
