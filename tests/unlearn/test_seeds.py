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


def with_line(results, line):
    """`results` with MaxEnt's students replaced by one per alpha: {alpha: (steps to criterion, area)}, each
    area a flat relearning curve (its mean height is the area)."""
    models = {n: m for n, m in results["models"].items() if not n.startswith("undo:")}
    for alpha, (steps, area) in line.items():
        models[f"undo:maxent:alpha={alpha:g}"] = {
            "retain_accuracy": 0.47, "forget_accuracy": area, "method": "maxent", "alpha": alpha,
            "teacher": "unlearned:maxent",
            "compute": {"stage": "distill", "steps": steps, "stopped_by_criterion": True},
            "relearn": {"steps": [0, 50, 100], "forget_accuracy": [area] * 3, "best_lr": [None, 1e-3, 1e-3],
                        "area": area}}
    return {**results, "models": models}


def test_the_alpha_line_over_seeds_orders_the_means_when_one_seed_swaps_its_top_two():
    ordered = with_line(make_results(), {0.2: (100, 0.7), 0.6: (500, 0.4), 1.0: (1000, 0.1)})
    swapped = with_line(make_results(), {0.2: (200, 0.6), 0.6: (600, 0.3), 1.0: (500, 0.2)})  # 1 beats 0.6 on neither
    line = aggregate({0: ordered, 1: swapped})["alpha_lines"]["maxent"]
    assert line["alphas"] == [0.2, 0.6, 1.0]
    assert [s["mean"] for s in line["steps"]] == [150, 550, 750]
    assert [a["mean"] for a in line["areas"]] == pytest.approx([0.65, 0.35, 0.15])
    assert line["areas"][2]["std"] == pytest.approx(math.sqrt(2 * 0.05 ** 2))
    assert line["steps_rise"] and line["robustness_grows"]
    assert line["steps_rise_on"] == [0] and line["robustness_grows_on"] == [0, 1]
    # the fit runs through all six points: slope and R^2 by hand (least squares)
    xs, ys = [100, 500, 1000, 200, 600, 500], [0.7, 0.4, 0.1, 0.6, 0.3, 0.2]
    mx, my = sum(xs) / 6, sum(ys) / 6
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    assert line["fit_steps"][0] == pytest.approx(slope) and slope < 0
    md = seeds_markdown(aggregate({0: ordered, 1: swapped}), "python launch/undo.py --seeds 0,1")
    assert "## The alpha line over seeds" in md
    assert "1: 750 ± 354 steps, area 0.150 ± 0.071" in md and "rise with alpha: yes (1/2 seeds alone)" in md

    against = with_line(make_results(), {0.2: (900, 0.7), 0.6: (700, 0.4), 1.0: (100, 0.1)})
    assert not aggregate({0: ordered, 1: against})["alpha_lines"]["maxent"]["steps_rise"]  # means 500, 600, 550
