"""`launch/undo.py --quick`: the whole experiment end to end at smoke-test budgets, then skipped on rerun."""

import json
import subprocess
import sys

import pytest
from launch_helpers import check

from distill.launcher import REPO, stage_env
from unlearn.relearn import relearning_area

pytestmark = pytest.mark.slow

NAMES = {"base", "gold", "unlearned:maxent", "unlearned:maxent:retain_weight=0.3", "undo:maxent:alpha=1",
         "undo:maxent:alpha=0.6"}


def undo(out, *extra):
    return subprocess.run([sys.executable, str(REPO / "launch/undo.py"), "--out", str(out), "--quick", *extra],
                          env=stage_env(), cwd=REPO, capture_output=True, text=True, timeout=900)


def test_quick_run_end_to_end_then_skipped(tmp_path):
    out = tmp_path / "undo"
    check(undo(out, "--pareto"))  # with one other setting of MaxEnt: a point of the frontier, attacked too
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == NAMES
    for name, m in results["models"].items():
        assert 0.0 <= m["retain_accuracy"] <= 1.0 and 0.0 <= m["forget_accuracy"] <= 1.0, name
        r = m["relearn"]
        assert r["steps"] == [0, 5, 10] and len(r["forget_accuracy"]) == len(r["best_lr"]) == 3, name
        assert r["area"] == pytest.approx(relearning_area(r["steps"], r["forget_accuracy"])), name
        assert m["compute"]["steps"] > 0 and m["compute"]["tokens"] > 0, name
    assert results["models"]["undo:maxent:alpha=0.6"]["alpha"] == 0.6
    assert results["models"]["undo:maxent:alpha=1"]["teacher"] == "unlearned:maxent"
    report = (out / "report.md").read_text()
    assert all(f"| {name} |" in report for name in NAMES)
    for png in ("relearning.png", "alpha_tradeoff.png", "pareto.png", "method_grid.png", "alpha_line.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert "## Frontier under attack" in report and "## Methods compared" in report

    again = undo(out, "--pareto")
    check(again)
    assert again.stdout.count("finished, skipped") == 2 + 2 + 1 + 2 + 6  # every stage
    assert "running" not in again.stdout
    # the rerun's results keep each stage's time from the run that made it, and say which were reused
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["stage_seconds"] == results["stage_seconds"] and None not in rerun["stage_seconds"].values()
    assert sorted(rerun["reused_stages"]) == sorted(results["stage_seconds"]) and results["reused_stages"] == []

