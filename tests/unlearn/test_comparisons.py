"""The comparisons of the report: the method grid, the alpha line's fit, the frontier under attack."""

import pytest
from test_report import CURVES, make_results

from unlearn import comparisons as cmp
from unlearn.report import report_markdown


def test_linear_fit_by_hand():
    # y = 1 + 2x exactly: R^2 1; then one point off the line.
    slope, intercept, r2 = cmp.linear_fit([0, 1, 2], [1, 3, 5])
    assert (slope, intercept, r2) == pytest.approx((2.0, 1.0, 1.0))
    slope, intercept, r2 = cmp.linear_fit([0, 1, 2], [0, 2, 1])
    # mean x 1, mean y 1; sxy = (-1)(-1) + 0 + (1)(0) = 1, sxx = 2 -> slope 0.5, intercept 0.5
    # residuals: -0.5, 1, -0.5 -> sse 1.5; sst = 1 + 1 + 0 = 2 -> R^2 0.25
    assert (slope, intercept, r2) == pytest.approx((0.5, 0.5, 0.25))
    assert cmp.linear_fit([1, 1], [0, 1]) is None


def results_with_alphas(steps_by_alpha, area_curves):
    results = make_results()
    models = results["models"]
    template = models.pop("undo:maxent:alpha=0.6")
    for alpha, steps in steps_by_alpha.items():
        model = {**template, "alpha": alpha, "compute": {**template["compute"], "steps": steps, "flops": 10 * steps},
                 "relearn": {**template["relearn"], "area": area_curves[alpha]}}
        models[f"undo:maxent:alpha={alpha:g}"] = model
    return results


def test_alpha_line_fits_area_on_steps_and_reads_both_trends():
    steps = {0.2: 100, 0.4: 200, 0.6: 300, 0.8: 400, 1.0: 500}
    areas = {0.2: 0.5, 0.4: 0.4, 0.6: 0.3, 0.8: 0.2, 1.0: 0.1}
    line = cmp.alpha_line(results_with_alphas(steps, areas), "maxent")
    assert line["alphas"] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert line["fit_steps"] == pytest.approx((-0.001, 0.6, 1.0))
    assert line["fit_flops"] == pytest.approx((-0.0001, 0.6, 1.0))
    assert line["steps_rise"] and line["robustness_grows"]
    areas[0.6] = 0.45  # area rises between 0.4 and 0.6: not falling throughout
    assert not cmp.alpha_line(results_with_alphas(steps, areas), "maxent")["robustness_grows"]


def test_frontier_keeps_only_non_dominated_points():
    pts = [("a", 0.5, 0.2), ("b", 0.4, 0.1), ("c", 0.4, 0.3), ("d", 0.5, 0.2)]
    assert [p[0] for p in cmp.frontier(pts)] == ["b", "a", "d"]  # c is dominated by a and b; a, d tie
    assert cmp.dominates(("x", 0.5, 0.1), ("y", 0.5, 0.2)) and not cmp.dominates(("x", 0.5, 0.2), ("y", 0.5, 0.2))


def test_attack_strengths_are_none_moderate_and_longest():
    assert cmp.attack_steps(make_results()) == [0, 50, 150]  # 0.4 x 150 = 60: nearest evaluated step 50


def test_undo_verdict_names_the_dominating_student_or_what_beats_the_closest():
    results = make_results()  # after 150 steps the alpha=1 student (0.46, 0.4) is below base's and unlearned's retain
    verdict = cmp.undo_verdict(results, 150)
    assert verdict.startswith("no UNDO student dominates") and "undo:maxent:alpha=1" in verdict
    assert "base (retain +0.040, forget +0.600" in verdict
    results["models"]["undo:maxent:alpha=1"]["retain_accuracy"] = 0.51  # now above every other model
    assert cmp.undo_verdict(results, 150).startswith("undo:maxent:alpha=1 dominates every other non-gold model")


def test_method_grid_flags_weak_suppression_in_the_report():
    rows = cmp.method_grid(make_results())
    assert rows == [{"method": "maxent", "initial_forget": 0.0, "unlearned_area": pytest.approx(0.725),
                     "student": "undo:maxent:alpha=1", "student_forget": 0.0,
                     "student_area": pytest.approx(35 / 150), "gold_area": pytest.approx(0.085),
                     "student_below": True, "weak_suppression": False}]
    leaky = make_results({**CURVES, "unlearned:maxent": [0.3, 0.5, 0.8, 0.9, 0.95]})
    assert cmp.method_grid(leaky)[0]["weak_suppression"] is True
    md = report_markdown(leaky)
    assert "**Weak initial suppression**: unlearned:maxent still answers 0.300 of the forget problems" in md
    # area by hand: (25 x 0.8 + 25 x 1.3 + 50 x 1.7 + 50 x 1.85) / 2 / 150 = 115 / 150
    assert "| maxent | 0.300 | 0.767 | undo:maxent:alpha=1 | 0.000 | 0.233 | 0.085 | yes |" in md
