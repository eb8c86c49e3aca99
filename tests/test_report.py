"""``fastffnn report --quick`` (DESIGN.md B5): it writes a well-formed REPORT.md whose figures
exist, and its numbers are the run's own -- they match the records it writes with --json, and one
record retrained with ``fastffnn.train`` gives the same number."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import fastffnn as ff
from fastffnn.reports import answers, findings
from fastffnn.reports import experiments as ex

pytestmark = [pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    done = subprocess.run([sys.executable, "-m", "fastffnn", "report", "--quick", "--out", str(out), "--json",
                           str(out / "records.json")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out, (out / "REPORT.md").read_text(), json.loads((out / "records.json").read_text()), done.stderr


def test_the_report_has_every_question_with_method_figure_table_and_answer(report):
    out, text, _, stderr = report
    titles = [title for title, _, _ in findings.QUESTIONS]
    assert re.findall(r"^## (\d\..*)$", text, flags=re.M) == titles
    answers = text.split("## Answers", 1)[1].split("\n## ", 1)[0]
    assert len(re.findall(r"^\d\. \*\*", answers, flags=re.M)) == len(titles)
    for (title, _, figures), section in zip(findings.QUESTIONS, text.split("\n## ")[2:]):
        assert section.startswith(title)
        assert "**Method.**" in section and "**Answer.**" in section
        assert re.search(r"^\|.*±.*\|$", section, flags=re.M), f"{title}: no table of mean ± interval"
        assert not re.search(r"\bnan\b", section), f"{title}: a number is missing"
        links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section)
        assert len(links) == len(figures)
        for link in links:
            assert (out / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
    assert "quick check" in text and "cores" in text and "numba " in text and "Python 3." in text
    assert f"wrote {out / 'REPORT.md'}" in stderr


def test_the_tables_are_the_records(report):
    _, text, records, _ = report
    s = ex.QUICK
    # question 2: independent instances without sync, from independent starts, over the seeds
    base = sorted((r for r in records["syncing"] if r["strategy"] == "none" and r["init"] == "independent"),
                  key=lambda r: r["seed"])
    assert len(base) == s.seeds
    accuracy = answers.ci([r["test_accuracy"] for r in base], ".2f", True)
    assert "| independent (no sync) | independent | " in text and f"| {accuracy} |" in text
    # question 1: every configuration's throughput at N = 1
    for backend, kernel in ex.GIL_CONFIGS:
        values = [r["throughput"] for r in records["gil"] if (r["backend"], r["kernel"], r["instances"])
                  == (backend, kernel, 1)]
        assert len(values) == s.gil_repeats
        assert f"| {backend} / {kernel} | {answers.ci(values, ',.0f')} |" in text
    # question 3: the penalty's test log loss
    for d in s.penalties:
        values = [r["test_log_loss"] for r in sorted(records["penalty"], key=lambda r: r["seed"]) if r["penalty"] == d]
        assert answers.ci(values) in text


def test_a_record_retrained_gives_the_same_numbers(report):
    _, _, records, _ = report
    s = ex.QUICK
    record = next(r for r in records["syncing"] if r["strategy"] == "align (all)" and r["init"] == "shared"
                  and r["sync_every"] == s.sync_every[0] and r["seed"] == 1)
    X, X_test, y, y_test = ex.split(1)
    res = ff.train(X, y, hidden=s.hidden, hyperparams=ff.vary(lr=s.lrs), epochs=s.epochs, sync="align",
                   sync_layers="all", sync_every=s.sync_every[0], init="shared", seed=1)
    again = ex.measure(res, X_test, y_test, s.target_loss)
    for key in ("test_accuracy", "ensemble_accuracy", "test_log_loss", "final_loss", "epochs_to_target"):
        assert record[key] == again[key], key
    assert np.array_equal(record["instance_accuracy"], again["instance_accuracy"])
