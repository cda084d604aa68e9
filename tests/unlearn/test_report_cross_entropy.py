"""The report on a cross-entropy capability (the language setting): checks, frontier and oracle matching, by hand.

Lower forget cross-entropy = more capable, so the attack pulls curves down, gold's relearning area is the
largest and a robust student's area is high."""

import pytest

from unlearn import comparisons as cmp
from unlearn import oracle
from unlearn.capability import ACCURACY, capability_of
from unlearn.relearn import relearning_area
from unlearn.report import acceptance_checks, report_markdown
from unlearn.seeds import aggregate

STEPS = [0, 25, 50, 100, 150]
CURVES = {  # forget CE (nats/token) of the strongest attacker
    "base": [2.0, 1.9, 1.9, 1.8, 1.8],
    "gold": [8.0, 7.0, 6.5, 6.0, 6.0],
    "unlearned:maxent": [6.0, 3.0, 2.5, 2.2, 2.1],
    "undo:maxent:alpha=1": [9.0, 7.5, 7.0, 6.5, 6.2],
    "undo:maxent:alpha=0.5": [8.0, 6.0, 5.0, 4.0, 3.5],
}
# Areas by hand (trapezoids of widths 25, 25, 50, 50, over 150): unlearned 406.25/150, gold 968.75/150,
# alpha=1 1042.5/150, alpha=0.5 725/150.
A_U, A_G, A_1, A_05 = 406.25 / 150, 968.75 / 150, 1042.5 / 150, 725 / 150
RETAIN = {"base": 2.9, "gold": 2.8, "unlearned:maxent": 3.0, "undo:maxent:alpha=1": 3.12, "undo:maxent:alpha=0.5": 3.2}
CE = {"retain": "retain_ce", "forget": "forget_ce", "higher_is_capable": False, "label": "cross-entropy (nats/token)"}


def ce_results(curves=CURVES):
    models = {}
    for name, curve in curves.items():
        models[name] = {"retain_ce": RETAIN.get(name, 3.0), "forget_ce": curve[0],
                        "compute": {"stage": "pretrain", "steps": 600, "tokens": 1},
                        "relearn": {"steps": STEPS, "metric": "forget_ce", "forget_ce": curve,
                                    "best_lr": [None] + [1e-3] * 4, "area": relearning_area(STEPS, curve)}}
    for alpha, steps in ((1.0, 500), (0.5, 200)):
        models[f"undo:maxent:alpha={alpha:g}"].update(
            method="maxent", alpha=alpha, teacher="unlearned:maxent",
            compute={"stage": "distill", "steps": steps, "tokens": 1, "stopped_by_criterion": True})
    models["unlearned:maxent"]["method"] = "maxent"
    return {"setting": {"name": "language", "capability": CE, "methods": ["maxent"], "alphas": [1.0, 0.5],
                        "command": "python launch/undo.py --setting language"}, "models": models}


def find(checks, *words):
    (match,) = [c for c in checks if all(w in c["check"] for w in words)]
    return match


def test_the_areas_are_the_hand_computed_ones():
    for name, area in (("unlearned:maxent", A_U), ("gold", A_G), ("undo:maxent:alpha=1", A_1),
                       ("undo:maxent:alpha=0.5", A_05)):
        assert ce_results()["models"][name]["relearn"]["area"] == pytest.approx(area)


def test_checks_follow_the_cross_entropy_direction():
    checks = acceptance_checks(ce_results())
    relearns = find(checks, "unlearned:maxent relearns")
    assert relearns["value"] == pytest.approx(2.1 / 2.0) and relearns["passed"] is True  # within 10% of base's 2.0
    gap = find(checks, "alpha=1 closes")
    assert gap["value"] == pytest.approx((A_U - A_1) / (A_U - A_G)) and gap["passed"] is True  # 1.131
    grows = find(checks, "robustness grows")
    assert grows["value"] == pytest.approx(A_1 - A_05) and grows["passed"] is True
    between = find(checks, "lies between")
    assert between["value"] == pytest.approx((A_05 - A_1) / (A_U - A_1)) and between["passed"] is True  # 0.499
    cheaper = find(checks, "fewer distillation steps")
    assert cheaper["value"] == pytest.approx(0.4) and cheaper["passed"] is True
    keeps_1, keeps_05 = find(checks, "alpha=1 keeps retain"), find(checks, "alpha=0.5 keeps retain")
    assert keeps_1["value"] == pytest.approx(3.12 / 3.0 - 1) and keeps_1["passed"] is True
    assert keeps_05["value"] == pytest.approx(3.2 / 3.0 - 1) and keeps_05["passed"] is False  # 6.7% > 5%


def test_checks_fail_the_other_way_round():
    worse = {**CURVES, "unlearned:maxent": [6.0, 5.0, 4.0, 3.0, 2.5],  # 2.5 / 2.0: does not come back within 10%
             "undo:maxent:alpha=0.5": [9.5, 8.0, 7.5, 7.0, 6.8]}  # relearns less than alpha 1: not between
    checks = acceptance_checks(ce_results(worse))
    assert find(checks, "unlearned:maxent relearns")["passed"] is False
    assert find(checks, "robustness grows")["passed"] is False
    assert find(checks, "lies between")["passed"] is False


def test_frontier_and_dominance_on_cross_entropy():
    cap = capability_of(ce_results())
    # retain CE lower is better, forget CE higher is better
    assert cmp.dominates(("a", 3.0, 6.0), ("b", 3.1, 5.0), cap)
    assert not cmp.dominates(("b", 3.1, 5.0), ("a", 3.0, 6.0), cap)
    assert cmp.dominates(("a", 3.0, 6.0), ("b", 3.1, 5.0)) is False  # read as accuracies it would not
    pts = cmp.points_at(ce_results(), 150)
    names = [p[0] for p in cmp.frontier(pts, cap)]
    # after 150 steps: base (2.9, 1.8), gold (2.8, 6.0), unlearned (3.0, 2.1), alpha 1 (3.12, 6.2),
    # alpha 0.5 (3.2, 3.5): gold dominates base, unlearned and alpha 0.5; alpha 1 has the highest forget CE
    assert names == ["gold", "undo:maxent:alpha=1"]
    # alpha 1 keeps English worse (3.12) than base (2.9) and unlearned (3.0): it dominates neither
    verdict = cmp.undo_verdict(ce_results(), 150)
    assert "the closest, undo:maxent:alpha=1, does not dominate: base (retain -0.220, forget -4.400" in verdict
    better = ce_results()
    better["models"]["undo:maxent:alpha=1"]["retain_ce"] = 2.85
    assert cmp.undo_verdict(better, 150).startswith("undo:maxent:alpha=1 dominates every other non-gold model")


def test_report_speaks_of_cross_entropy_and_seeds_summarise_it():
    text = report_markdown(ce_results())
    assert "cross-entropy (nats/token)" in text and "accuracy" not in text
    assert "| undo:maxent:alpha=1 | 3.120 | 9.000 |" in text
    agg = aggregate({0: ce_results(), 1: ce_results()})
    assert agg["metrics"][:2] == ["retain_ce", "forget_ce"]
    assert agg["summary"]["gold"]["forget_ce"] == {"mean": 8.0, "std": 0.0, "n": 2}
    assert capability_of({"setting": {}}) == ACCURACY  # results from before the language setting


def test_oracle_checks_and_distance_ratio():
    results = ce_results()
    base_curve, fresh_curve = [7.5, 4.0, 3.0, 2.5, 2.3], [7.8, 7.0, 6.5, 6.1, 6.0]
    for name, curve, loss in (("oracle:base-init", base_curve, 0.05), ("oracle:fresh-init", fresh_curve, 0.2)):
        results["models"][name] = {"retain_ce": 2.9, "forget_ce": curve[0], "teacher": "gold",
                                   "distill_loss": {"steps": [1, 2, 3], "loss": [1.0, 0.5, loss]},
                                   "relearn": {"steps": STEPS, "metric": "forget_ce", "forget_ce": curve,
                                               "area": relearning_area(STEPS, curve)}}
    a_b, a_f = relearning_area(STEPS, base_curve), relearning_area(STEPS, fresh_curve)
    checks = oracle.checks(results)
    assert [c["passed"] for c in checks] == [True, False, True]  # base-init matched; fresh-init 0.2 >= 0.1
    assert checks[2]["value"] == pytest.approx(abs(a_b - A_G) / abs(a_f - A_G))
    assert oracle.checks(ce_results()) == []  # no oracle students, no checks
    assert "## Oracle matching" in report_markdown(results)
