"""The UNDO pipeline's report: acceptance checks, a Markdown results table, and the figures beside it.

The input is the results dict that launch/undo.py assembles:

    {"setting": {"name", "capability", "quick", "command", "methods", "alphas", "line", "oracle_matching",
                 "attack": {"lrs", "seeds", "steps", "eval_every", "eval"}},
     "models": {"base" | "gold" | "unlearned:<m>" | "undo:<m>:alpha=<a>" | "oracle:<init>": {
         <retain key>, <forget key>, "compute": {"stage", "steps", "tokens", ...},
         "relearn": {"steps", "metric", <forget key>: curve, "best_lr", "area"},
         "method", "alpha", "beta", "teacher"  (the last four: unlearned models and students only)}}}

The capability (`unlearn.capability`) names the keys (retain_accuracy / forget_accuracy, or retain_ce /
forget_ce) and which way is capable; a results dict without one is an accuracy run. A partial run may lack
any key or model: the table shows "-" and the checks n/a rather than failing. A relearning area further
toward capable (higher accuracy, lower cross-entropy) means the attack recovers more of the forget domain,
i.e. a less robust model.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from unlearn import comparison_plots, comparisons, oracle, plots
from unlearn.capability import ACCURACY, Capability, capability_of
from unlearn.plots import alpha_of, area_of, final_relearned, method_of, methods, ordered_models, relearn_curve
from unlearn.relearn import gap_closed

RELEARN_RATIO = 0.8  # plain unlearning must be shallow: the attack recovers >= 80% of what base reaches
RELEARN_CE_RATIO = 1.1  # on cross-entropy: the attacked unlearned model within 10% of base's own forget CE
GAP_TARGET = 0.6
RETAIN_SLACK = 0.05
EPS = 1e-9  # accuracies are ratios of counts: a value equal to its threshold must not fail on float noise
STATUS = {True: "PASS", False: "FAIL", None: "n/a"}
FIGURES = (
    ("relearning.png", "Relearning attack: the forget metric vs steps", plots.plot_relearning),
    ("alpha_tradeoff.png", "Robustness and distillation compute vs alpha", plots.plot_alpha_tradeoff),
    ("pareto.png", "Retain vs forget metric before, during and after the attack (frontier joined)",
     comparison_plots.plot_frontier),
    ("method_grid.png", "Per method: unlearned, distilled and gold under the attack",
     comparison_plots.plot_method_grid),
    ("alpha_line.png", "Relearning area vs distillation steps, with the fitted line", comparison_plots.plot_alpha_line),
    ("oracle_matching.png", "Oracle matching: distillation loss to the oracle, then the attack",
     oracle.plot_oracle_matching),
)


def acceptance_checks(results: Mapping) -> list[dict]:
    """The run's acceptance criteria, per method: {"check", "value", "target", "passed"} (value and passed are
    None when an input is missing)."""
    models, cap = results.get("models") or {}, capability_of(results)
    language = (results.get("setting") or {}).get("name") == "language"
    checks = []
    for m in methods(results):
        checks += [_relearns(models, m, cap), _closes_gap(models, m, cap)]
        for a in (a for a in _alphas(results, m) if a < 1):
            checks.append(_robustness_grows(models, m, a, cap))
            if language:  # the language setting's acceptance also asks where the partial student lies
                checks += [_partial_between(models, m, a, cap), _partial_cheaper(models, m, a)]
        checks += [_keeps_retain(models, name, cap) for name in ordered_models(results)
                   if name.startswith(f"undo:{m}:")]
    return checks + oracle.checks(results)


def report_markdown(results: Mapping) -> str:
    setting = results.get("setting") or {}
    parts = [
        "# UNDO: unlearning, distillation and relearning attacks",
        "\n\n".join(_setting_lines(setting)),
        "## Results\n\n" + _table(results),
        _legend(capability_of(results)),
        "## Acceptance checks\n\n" + "\n".join(_check_line(c) for c in acceptance_checks(results)),
        "## Methods compared\n\n" + _grid_table(results),
        "## Robustness vs compute (the alpha line)\n\n" + _alpha_lines(results),
        "## Frontier under attack\n\n" + _frontier_lines(results),
        *(["## Oracle matching\n\n" + oracle.markdown(results)] if oracle.present(results) else []),
        "## Figures\n\n" + "\n\n".join(f"![{caption}]({file})" for file, caption, _ in _figures(results)),
    ]
    return "\n\n".join(parts) + "\n"


def write_report(results: Mapping, out_dir: Path) -> list[Path]:
    """Write report.md and its figures into out_dir; return the written paths, report first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "report.md"
    report.write_text(report_markdown(results))
    return [report] + [plot(results, out_dir / file) for file, _, plot in _figures(results)]


def _figures(results: Mapping) -> list[tuple]:
    """The figures a run has data for the kind of: the oracle-matching figure only with oracle students."""
    return [f for f in FIGURES if f[2] is not oracle.plot_oracle_matching or oracle.present(results)]


def _check(text: str, value: float | None, target: str, passes: Callable[[float], bool]) -> dict:
    return {"check": text, "value": value, "target": target, "passed": None if value is None else passes(value)}


def _relearns(models: Mapping, m: str, cap: Capability) -> dict:
    unlearned = final_relearned(models.get(f"unlearned:{m}") or {})
    if cap.higher_is_capable:
        base = final_relearned(models.get("base") or {})
        ratio = None if unlearned is None or not base else unlearned / base
        return _check(f"unlearned:{m} relearns: its final relearned forget accuracy, as a share of base's",
                      ratio, f">= {RELEARN_RATIO:g}", lambda v: v >= RELEARN_RATIO - EPS)
    base = (models.get("base") or {}).get(cap.forget)
    ratio = None if unlearned is None or not base else unlearned / base
    return _check(f"unlearned:{m} relearns: its forget {cap.label} after the attack over base's before any attack",
                  ratio, f"<= {RELEARN_CE_RATIO:g}", lambda v: v <= RELEARN_CE_RATIO + EPS)


def _closes_gap(models: Mapping, m: str, cap: Capability) -> dict:
    student = _student(m, 1.0)
    return _check(f"{student} closes >= {GAP_TARGET:.0%} of the unlearned-to-gold gap in relearning area",
                  gap_of(models, student, cap), f">= {GAP_TARGET:g}", lambda v: v >= GAP_TARGET - EPS)


def _robustness_grows(models: Mapping, m: str, alpha: float, cap: Capability) -> dict:
    """A partially perturbed student relearns more than the fresh one (a larger accuracy area, a smaller
    cross-entropy area): robustness grows with alpha."""
    partial, fresh = (area_of(models.get(_student(m, a)) or {}) for a in (alpha, 1.0))
    diff = None if partial is None or fresh is None else cap.score(partial) - cap.score(fresh)
    first, second = (_student(m, alpha), _student(m, 1.0))[::1 if cap.higher_is_capable else -1]
    return _check(f"robustness grows with alpha: area({first}) - area({second})", diff, "> 0", lambda v: v > 0)


def _partial_between(models: Mapping, m: str, alpha: float, cap: Capability) -> dict:
    """The partial student's relearning area lies between the fresh student's and the unlearned model's: the
    share of the way from the fresh student to the unlearned model, in (0, 1)."""
    fresh, partial, unlearned = (area_of(models.get(n) or {}) for n in (_student(m, 1.0), _student(m, alpha),
                                                                           f"unlearned:{m}"))
    share = None if None in (fresh, partial, unlearned) or unlearned == fresh else \
        (partial - fresh) / (unlearned - fresh)
    return _check(f"{_student(m, alpha)}'s area lies between {_student(m, 1.0)}'s and unlearned:{m}'s: "
                  "(partial - fresh) / (unlearned - fresh)", share, "in (0, 1)", lambda v: 0 < v < 1)


def _partial_cheaper(models: Mapping, m: str, alpha: float) -> dict:
    """The partial student needed fewer distillation steps than the fresh one: steps(partial) / steps(fresh)."""
    partial, fresh = (((models.get(_student(m, a)) or {}).get("compute") or {}).get("steps") for a in (alpha, 1.0))
    ratio = None if partial is None or not fresh else partial / fresh
    return _check(f"{_student(m, alpha)} needs fewer distillation steps than {_student(m, 1.0)}: steps ratio",
                  ratio, "< 1", lambda v: v < 1)


def _keeps_retain(models: Mapping, name: str, cap: Capability) -> dict:
    teacher_name = models[name].get("teacher")
    teacher = (models.get(teacher_name) or {}).get(cap.retain) if teacher_name else None
    student = models[name].get(cap.retain)
    if cap.higher_is_capable:
        diff = None if teacher is None or student is None else teacher - student
        return _check(f"{name} keeps retain accuracy within {RETAIN_SLACK:g} of its teacher {teacher_name or '-'}: "
                      "teacher - student", diff, f"<= {RETAIN_SLACK:g}", lambda v: v <= RETAIN_SLACK + EPS)
    rel = None if not teacher or student is None else student / teacher - 1.0
    return _check(f"{name} keeps retain {cap.label} within {RETAIN_SLACK:.0%} of its teacher {teacher_name or '-'}: "
                  "student / teacher - 1", rel, f"<= {RETAIN_SLACK:g}", lambda v: v <= RETAIN_SLACK + EPS)


def _student(m: str, alpha: float) -> str:
    return f"undo:{m}:alpha={alpha:g}"


def _alphas(results: Mapping, m: str) -> list[float]:
    """The alphas the setting asks for (every method's, and m's alpha line) or that a student of m has,
    largest first."""
    setting = results.get("setting") or {}
    listed = {float(a) for a in [*(setting.get("alphas") or []), *((setting.get("line") or {}).get(m) or [])]}
    present = {alpha_of(n) for n in results.get("models") or {} if n.startswith(f"undo:{m}:")}
    return sorted(listed | present, reverse=True)


def gap_of(models: Mapping, name: str, cap: Capability = ACCURACY) -> float | None:
    """Share of its method's unlearned-to-gold area gap that a model closes (None for base, gold, the oracle
    students, or missing data)."""
    m = method_of(name)
    if m is None:
        return None
    areas = [area_of(models.get(n) or {}) for n in (f"unlearned:{m}", name, "gold")]
    return None if None in areas else gap_closed(*areas, higher_is_capable=cap.higher_is_capable)


def _setting_lines(setting: Mapping) -> list[str]:
    lines = [f"Produced by `{setting.get('command', '?')}`."]
    if setting.get("quick"):
        lines.append("**Quick run**: reduced budgets, a smoke test of the pipeline rather than results to quote.")
    attack = setting.get("attack")
    if attack:
        lrs = ", ".join(f"{lr:g}" for lr in attack.get("lrs") or [])
        lines.append(f"Relearning attack: fine-tuning on the forget domain for {attack.get('steps', '?')} steps at "
                     f"each LR in [{lrs}] and seed in {attack.get('seeds', '?')}, evaluated every "
                     f"{attack.get('eval_every', '?')} steps on {attack.get('eval', '?')}; at each step the "
                     "strongest LR (mean over seeds) counts.")
    return lines


def _table(results: Mapping) -> str:
    models, cap = results.get("models") or {}, capability_of(results)
    steps = sorted(set().union(*(relearn_curve(model)[0] for model in models.values())))
    header = ["model", "retain", "forget", *(f"@{s}" for s in steps), "relearning area", "gap closed",
              "compute steps", "compute tokens"]
    rows = [header, ["---"] + ["---:"] * (len(header) - 1)]
    for name in ordered_models(results):
        model = models[name]
        curve = dict(zip(*relearn_curve(model)))
        compute = model.get("compute") or {}
        budget = compute.get("stopped_by_criterion") is False  # a student that ran out of steps
        rows.append([name, _num(model.get(cap.retain)), _num(model.get(cap.forget)),
                     *(_num(curve.get(s)) for s in steps), _num(area_of(model)), _num(gap_of(models, name, cap)),
                     _int(compute.get("steps")) + (" (budget)" if budget else ""), _int(compute.get("tokens"))])
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    return table + "".join(f"\n\n{line}" for line in budget_warnings(results))


def budget_warnings(results: Mapping) -> list[str]:
    """One line per student that used its whole step budget without meeting its stop criterion: its compute
    is then the budget, a lower bound on what the criterion needs, and its retain accuracy may fall short."""
    return [f"**Warning**: {name} stopped at its step budget ({_int(model['compute'].get('steps'))} steps) "
            "before meeting its stop criterion; its compute is a lower bound on the steps to criterion."
            for name, model in (results.get("models") or {}).items()
            if (model.get("compute") or {}).get("stopped_by_criterion") is False]


def _grid_table(results: Mapping) -> str:
    rows = comparisons.method_grid(results)
    if not rows:
        return "No unlearned model."
    lines = ["| method | initial forget | unlearned area | distilled | distilled forget | distilled area | gold area "
             "| distilled relearns less |", "|---|---:|---:|---|---:|---:|---:|---|"]
    notes = []
    for r in rows:
        below = {True: "yes", False: "**no**", None: "-"}[r["student_below"]]
        lines.append(f"| {r['method']} | {_num(r['initial_forget'])} | {_num(r['unlearned_area'])} | "
                     f"{r['student'] or '-'} | {_num(r['student_forget'])} | {_num(r['student_area'])} | "
                     f"{_num(r['gold_area'])} | {below} |")
        if r["weak_suppression"]:
            notes.append(f"**Weak initial suppression**: unlearned:{r['method']} still answers "
                         f"{r['initial_forget']:.3f} of the forget problems (above {comparisons.LEAK_FORGET:g}); "
                         f"what the teacher still knows, distillation passes on (its student: forget "
                         f"{_num(r['student_forget'])}, area {_num(r['student_area'])}).")
        elif r["student_below"] is False:
            notes.append(f"**{r['student']} relearns no less than its teacher** (area {_num(r['student_area'])} vs "
                         f"{_num(r['unlearned_area'])}) although the teacher's suppression was strong "
                         f"(initial forget {_num(r['initial_forget'])}).")
    return "\n".join(lines) + "".join(f"\n\n{n}" for n in notes)


def _alpha_lines(results: Mapping) -> str:
    out, cap = [], capability_of(results)
    for m in plots.methods(results):
        line = comparisons.alpha_line(results, m)
        if line is None:
            continue
        pairs = ", ".join(f"{a:g}: {int(s):,} steps, area {y:.3f}"
                          for a, s, y in zip(line["alphas"], line["steps"], line["areas"]))
        text = f"- **{m}** ({len(line['alphas'])} alphas; {pairs}). "
        for key, unit in (("fit_steps", "step"), ("fit_flops", "FLOP")):
            if line[key]:
                slope, intercept, r2 = line[key]
                text += f"area = {intercept:.3f} {slope:+.3g} per {unit}, R^2 {r2:.3f}. "
        text += (f"Steps to criterion rise with alpha: {'yes' if line['steps_rise'] else 'no'}; "
                 f"robustness grows with alpha (relearning area {'falls' if cap.higher_is_capable else 'rises'}): "
                 f"{'yes' if line['robustness_grows'] else 'no'}.")
        out.append(text)
    return "\n".join(out) or "Fewer than two students of any method: no line to fit."


def _frontier_lines(results: Mapping) -> str:
    steps, cap = comparisons.attack_steps(results), capability_of(results)
    if not steps:
        return "No relearning curves."
    out = []
    for step in steps:
        front = comparisons.frontier(comparisons.points_at(results, step), cap)
        out.append(f"- after {step} steps: frontier " + ", ".join(f"{n} ({r:.3f}, {f:.3f})" for n, r, f in front))
    out.append(f"- after the longest attack ({steps[-1]} steps): {comparisons.undo_verdict(results, steps[-1])}.")
    return (f"(retain {cap.label}, forget {cap.label} after the attack) of the non-dominated models:\n\n"
            + "\n".join(out))


def _legend(cap: Capability) -> str:
    if cap.higher_is_capable:
        return _LEGEND.format(values="accuracy on the retain and forget evaluation problems", metric="accuracy",
                              area="in [0, 1]; lower = more robust")
    return _LEGEND.format(values=f"{cap.label} on held-out retain and forget text (lower = more capable)",
                          metric=cap.label, area="the curve's mean height; higher = more robust")


_LEGEND = """\
- **retain / forget**: {values}.
- **@N**: forget {metric} of the strongest relearning attacker after N steps (@0: the model before the attack).
- **relearning area**: area under that curve divided by the step budget, {area}.
- **gap closed**: (area(unlearned) - area(model)) / (area(unlearned) - area(gold)) within the model's method;
  1 = as robust as the gold model (never trained on the forget domain), 0 = no more robust than plain unlearning.
- **compute**: optimiser steps and training tokens of the model's own stage (pretraining, unlearning or
  distillation); a student trains until its stop criterion is met, so its steps are the steps to criterion,
  unless marked "(budget)": it ran out of steps first."""


def _check_line(check: Mapping) -> str:
    value = "-" if check["value"] is None else f"{check['value']:.3f}"
    return f"- **{STATUS[check['passed']]}** {check['check']}: {value} (target {check['target']})"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _int(n: int | None) -> str:
    return "-" if n is None else f"{int(n):,}"
