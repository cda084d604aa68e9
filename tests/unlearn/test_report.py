import pytest

from unlearn.relearn import relearning_area
from unlearn.report import acceptance_checks, report_markdown

STEPS = [0, 25, 50, 100, 150]
# Areas by hand (trapezoids over widths 25, 25, 50, 50, divided by 150):
# unlearned 108.75/150 = 0.725, alpha=1 35/150, alpha=0.6 60/150 = 0.4, gold 12.75/150 = 0.085.
CURVES = {
    "base": [0.99, 1.0, 1.0, 1.0, 1.0],
    "gold": [0.01, 0.05, 0.07, 0.1, 0.15],
    "unlearned:maxent": [0.0, 0.4, 0.8, 0.9, 0.95],
    "undo:maxent:alpha=1": [0.0, 0.1, 0.2, 0.3, 0.4],
    "undo:maxent:alpha=0.6": [0.0, 0.2, 0.4, 0.5, 0.6],
}


def make_results(curves=CURVES, retain=None):
    retain = {"base": 0.50, "gold": 0.49, "unlearned:maxent": 0.48, "undo:maxent:alpha=1": 0.46,
              "undo:maxent:alpha=0.6": 0.47, **(retain or {})}
    models = {}
    for name, curve in curves.items():
        models[name] = {
            "retain_accuracy": retain[name], "forget_accuracy": curve[0],
            "compute": {"stage": "pretrain", "steps": 1500, "tokens": 3024000},
            "relearn": {"steps": STEPS, "forget_accuracy": curve, "best_lr": [None] + [1e-3] * 4,
                        "area": relearning_area(STEPS, curve)},
        }
    for alpha, beta in ((1.0, 1.0), (0.6, 0.1)):
        models[f"undo:maxent:alpha={alpha:g}"].update(
            method="maxent", alpha=alpha, beta=beta, teacher="unlearned:maxent",
            compute={"stage": "distill", "steps": 800, "tokens": 1638400, "stopped_by_criterion": True})
    models["unlearned:maxent"].update(method="maxent", compute={"stage": "unlearn", "steps": 60, "tokens": 120000})
    return {
        "setting": {"quick": True, "command": "python launch/undo.py --out runs/undo", "methods": ["maxent"],
                    "alphas": [1.0, 0.6], "attack": {"lrs": [1e-4, 3e-4, 1e-3, 3e-3], "seeds": [0], "steps": 150,
                                                     "eval_every": 25, "eval": "forget-op equations, 100 per op"}},
        "models": models,
    }


def find(checks, *words):
    (match,) = [c for c in checks if all(w in c["check"] for w in words)]
    return match


def test_checks_match_hand_computed_values():
    checks = acceptance_checks(make_results())
    assert len(checks) == 5
    relearns = find(checks, "unlearned:maxent relearns")
    assert relearns["value"] == pytest.approx(0.95) and relearns["passed"] is True
    gap = find(checks, "undo:maxent:alpha=1 closes")
    assert gap["value"] == pytest.approx((0.725 - 35 / 150) / (0.725 - 0.085)) and gap["passed"] is True
    grows = find(checks, "robustness grows with alpha")
    assert grows["value"] == pytest.approx(0.4 - 35 / 150) and grows["passed"] is True
    retain_1 = find(checks, "undo:maxent:alpha=1 keeps retain")
    assert retain_1["value"] == pytest.approx(0.02) and retain_1["passed"] is True
    assert find(checks, "undo:maxent:alpha=0.6 keeps retain")["value"] == pytest.approx(0.01)


def test_unlearned_that_does_not_relearn_fails():
    curves = {**CURVES, "unlearned:maxent": [0.0, 0.4, 0.6, 0.7, 0.75]}
    check = find(acceptance_checks(make_results(curves)), "unlearned:maxent relearns")
    assert check["value"] == pytest.approx(0.75) and check["passed"] is False


def test_student_that_relearns_like_its_teacher_fails_the_gap_check():
    curves = {**CURVES, "undo:maxent:alpha=1": [0.0, 0.3, 0.6, 0.8, 0.9]}
    check = find(acceptance_checks(make_results(curves)), "closes")
    assert check["value"] < 0.6 and check["passed"] is False


def test_partial_alpha_more_robust_than_fresh_student_fails():
    curves = {**CURVES, "undo:maxent:alpha=0.6": [0.0, 0.05, 0.1, 0.15, 0.2]}
    check = find(acceptance_checks(make_results(curves)), "robustness grows")
    assert check["value"] < 0 and check["passed"] is False


def test_retain_check_flips_at_the_slack():
    at_slack = find(acceptance_checks(make_results(retain={"undo:maxent:alpha=1": 0.43})), "alpha=1 keeps retain")
    assert at_slack["value"] == pytest.approx(0.05) and at_slack["passed"] is True
    beyond = find(acceptance_checks(make_results(retain={"undo:maxent:alpha=1": 0.42})), "alpha=1 keeps retain")
    assert beyond["value"] == pytest.approx(0.06) and beyond["passed"] is False


def test_markdown_has_table_rows_and_check_statuses():
    md = report_markdown(make_results(retain={"undo:maxent:alpha=0.6": 0.40}))
    assert "python launch/undo.py --out runs/undo" in md
    assert ("| model | retain | forget | @0 | @25 | @50 | @100 | @150 | relearning area | gap closed | "
            "compute steps | compute tokens |") in md
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    assert set(CURVES) <= set(rows)
    assert "| 0.500 | 0.990 | 0.990 | 1.000 |" in rows["base"]
    assert "| 0.725 | 0.000 | 60 | 120,000 |" in rows["unlearned:maxent"]
    assert "| 0.233 | 0.768 | 800 | 1,638,400 |" in rows["undo:maxent:alpha=1"]
    assert "| 0.085 | - | 1,500 | 3,024,000 |" in rows["gold"]  # gap closed is only for a method's models
    statuses = [line for line in md.splitlines() if line.startswith("- **")]
    assert any(s.startswith("- **FAIL**") and "alpha=0.6 keeps retain" in s for s in statuses)
    assert sum(s.startswith("- **PASS**") for s in statuses) == 4
    assert "(relearning.png)" in md and "(alpha_tradeoff.png)" in md and "(pareto.png)" in md


def test_missing_relearn_and_models_give_na_not_a_crash():
    results = make_results()
    del results["models"]["undo:maxent:alpha=1"]["relearn"]
    checks = acceptance_checks(results)
    assert find(checks, "closes")["passed"] is None and find(checks, "closes")["value"] is None
    assert find(checks, "robustness grows")["passed"] is None
    assert find(checks, "unlearned:maxent relearns")["passed"] is True
    md = report_markdown(results)
    assert "**n/a**" in md
    row = next(line for line in md.splitlines() if line.startswith("| undo:maxent:alpha=1 |"))
    assert row.startswith("| undo:maxent:alpha=1 | 0.460 | 0.000 | - | - | - | - | - | - | - | 800 |")


def test_an_alpha_line_student_is_checked_and_its_missing_run_is_na():
    results = make_results()
    results["setting"].update(alphas=[1.0], line={"maxent": [0.6, 0.3]})  # 0.3's student has not run
    grows = [c for c in acceptance_checks(results) if "robustness grows" in c["check"]]
    assert [c["passed"] for c in grows] == [True, None]
    assert "area(undo:maxent:alpha=0.6)" in grows[0]["check"] and "area(undo:maxent:alpha=0.3)" in grows[1]["check"]
    results["setting"]["line"] = {"graddiff": [0.3]}  # another method's line asks nothing of maxent
    assert len([c for c in acceptance_checks(results) if "robustness grows" in c["check"]]) == 1


def test_partial_results_without_gold_teacher_or_setting():
    results = make_results()
    del results["models"]["gold"], results["models"]["unlearned:maxent"], results["setting"]
    checks = acceptance_checks(results)  # the method and alphas now come from the students' names
    assert [c["passed"] for c in checks] == [None, None, True, None, None]
    assert "n/a" in report_markdown(results)
    assert acceptance_checks({}) == [] and "| model |" in report_markdown({})


def test_a_student_stopped_by_its_budget_is_flagged():
    results = make_results()
    results["models"]["undo:maxent:alpha=1"]["compute"]["stopped_by_criterion"] = False
    md = report_markdown(results)
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    assert "| 800 (budget) | 1,638,400 |" in rows["undo:maxent:alpha=1"]
    assert "| 800 | 1,638,400 |" in rows["undo:maxent:alpha=0.6"]  # met its criterion: not flagged
    warnings = [line for line in md.splitlines() if line.startswith("**Warning**")]
    assert warnings == ["**Warning**: undo:maxent:alpha=1 stopped at its step budget (800 steps) before meeting "
                        "its stop criterion; its compute is a lower bound on the steps to criterion."]
    assert not any(line.startswith("**Warning**") for line in report_markdown(make_results()).splitlines())
