"""The experiment on several seeds: per-seed stages and the mean and spread over seeds."""

import math
from pathlib import Path

import pytest
from test_report import make_results

from unlearn.experiment import Settings, build_stages
from unlearn.seeds import aggregate, seeds_markdown


def test_every_training_stage_gets_the_seed_and_seed_0_changes_nothing():
    plain = build_stages(Settings(Path("o"), ["maxent"], [1.0]))
    seeded = build_stages(Settings(Path("o"), ["maxent"], [1.0], seed=2))
    for a, b in zip(plain, seeded, strict=True):
        assert "--seed" not in a.args
        if b.script == "launch/relearn.py":  # the attack is the measurement: the same on every seed
            assert b.args == a.args
        else:
            assert b.args == [*a.args, "--seed", "2"], b.name


def test_mean_spread_budget_stops_and_check_counts_over_seeds():
    first, second = make_results(), make_results(retain={"undo:maxent:alpha=0.6": 0.40})
    second["models"]["undo:maxent:alpha=1"]["compute"]["stopped_by_criterion"] = False
    agg = aggregate({0: first, 1: second})
    retain = agg["summary"]["undo:maxent:alpha=0.6"]["retain_accuracy"]
    assert retain["n"] == 2 and retain["mean"] == pytest.approx(0.435)
    assert retain["std"] == pytest.approx(math.sqrt(2 * 0.035 ** 2))  # sample std of 0.47 and 0.40
    assert agg["summary"]["undo:maxent:alpha=1"]["budget_stops"] == 1
    assert agg["summary"]["undo:maxent:alpha=0.6"]["budget_stops"] == 0
    assert "budget_stops" not in agg["summary"]["base"]  # not a student
    area = agg["summary"]["undo:maxent:alpha=1"]["relearning_area"]
    assert area["mean"] == pytest.approx(35 / 150) and area["std"] == 0.0
    checks = {c["check"]: c for c in agg["checks"]}
    retain_check = next(c for name, c in checks.items() if "alpha=0.6 keeps retain" in name)
    assert retain_check["passed_on"] == [0] and retain_check["seeds"] == 2  # 0.48 - 0.40 breaks the slack
    md = seeds_markdown(agg, "python launch/undo.py --seeds 0,1")
    assert "| undo:maxent:alpha=0.6 | 0.435 ± 0.049 |" in md
    assert any(line.startswith("- 1/2 ") and "alpha=0.6 keeps retain" in line for line in md.splitlines())
