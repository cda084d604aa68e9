"""The UNDO pipeline's report: acceptance checks, a Markdown results table, and the figures beside it.

The input is the results dict that launch/undo.py assembles:

    {"setting": {"quick", "command", "methods", "alphas", "attack": {"lrs", "seeds", "steps", "eval_every", "eval"}},
     "models": {"base" | "gold" | "unlearned:<m>" | "undo:<m>:alpha=<a>": {
         "retain_accuracy", "forget_accuracy", "compute": {"stage", "steps", "tokens", ...},
         "relearn": {"steps", "forget_accuracy", "best_lr", "area"},
         "method", "alpha", "beta", "teacher"  (the last four: unlearned models and students only)}}}

A partial run may lack any key or model: the table shows "-" and the checks n/a rather than failing.
A higher relearning area means the attack recovers more of the forget domain, i.e. a less robust model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from unlearn import comparison_plots, comparisons, plots
from unlearn.plots import alpha_of, area_of, final_relearned, method_of, methods, ordered_models, relearn_curve
from unlearn.relearn import gap_closed

RELEARN_RATIO = 0.8  # plain unlearning must be shallow: the attack recovers >= 80% of what base reaches
GAP_TARGET = 0.6
RETAIN_SLACK = 0.05
EPS = 1e-9  # accuracies are ratios of counts: a value equal to its threshold must not fail on float noise
STATUS = {True: "PASS", False: "FAIL", None: "n/a"}
FIGURES = (
    ("relearning.png", "Relearning attack: forget accuracy vs steps", plots.plot_relearning),
    ("alpha_tradeoff.png", "Robustness and distillation compute vs alpha", plots.plot_alpha_tradeoff),
    ("pareto.png", "Retain vs forget accuracy before, during and after the attack (frontier joined)",
     comparison_plots.plot_frontier),
    ("method_grid.png", "Per method: unlearned, distilled and gold under the attack",
     comparison_plots.plot_method_grid),
    ("alpha_line.png", "Relearning area vs distillation steps, with the fitted line", comparison_plots.plot_alpha_line),
)


def acceptance_checks(results: Mapping) -> list[dict]:
    """The run's acceptance criteria, per method: {"check", "value", "target", "passed"} (value and passed are
    None when an input is missing)."""
    models = results.get("models") or {}
    checks = []
    for m in methods(results):
        checks += [_relearns(models, m), _closes_gap(models, m)]
        checks += [_robustness_grows(models, m, a) for a in _alphas(results, m) if a < 1]
        checks += [_keeps_retain(models, name) for name in ordered_models(results) if name.startswith(f"undo:{m}:")]
    return checks


def report_markdown(results: Mapping) -> str:
    setting = results.get("setting") or {}
    parts = [
        "# UNDO: unlearning, distillation and relearning attacks",
        "\n\n".join(_setting_lines(setting)),
        "## Results\n\n" + _table(results),
        _LEGEND,
        "## Acceptance checks\n\n" + "\n".join(_check_line(c) for c in acceptance_checks(results)),
        "## Methods compared\n\n" + _grid_table(results),
        "## Robustness vs compute (the alpha line)\n\n" + _alpha_lines(results),
        "## Frontier under attack\n\n" + _frontier_lines(results),
        "## Figures\n\n" + "\n\n".join(f"![{caption}]({file})" for file, caption, _ in FIGURES),
    ]
    return "\n\n".join(parts) + "\n"


def write_report(results: Mapping, out_dir: Path) -> list[Path]:
    """Write report.md and its figures into out_dir; return the written paths, report first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "report.md"
    report.write_text(report_markdown(results))
    return [report] + [plot(results, out_dir / file) for file, _, plot in FIGURES]


def _check(text: str, value: float | None, target: str, passes: Callable[[float], bool]) -> dict:
    return {"check": text, "value": value, "target": target, "passed": None if value is None else passes(value)}


def _relearns(models: Mapping, m: str) -> dict:
    unlearned = final_relearned(models.get(f"unlearned:{m}") or {})
    base = final_relearned(models.get("base") or {})
    ratio = None if unlearned is None or not base else unlearned / base
    return _check(f"unlearned:{m} relearns: its final relearned forget accuracy, as a share of base's",
                  ratio, f">= {RELEARN_RATIO:g}", lambda v: v >= RELEARN_RATIO - EPS)


def _closes_gap(models: Mapping, m: str) -> dict:
    student = _student(m, 1.0)
    return _check(f"{student} closes >= {GAP_TARGET:.0%} of the unlearned-to-gold gap in relearning area",
                  gap_of(models, student), f">= {GAP_TARGET:g}", lambda v: v >= GAP_TARGET - EPS)


def _robustness_grows(models: Mapping, m: str, alpha: float) -> dict:
    """A partially perturbed student relearns more (larger area) than the fresh one: robustness grows with alpha."""
    partial, fresh = (area_of(models.get(_student(m, a)) or {}) for a in (alpha, 1.0))
    diff = None if partial is None or fresh is None else partial - fresh
    return _check(f"robustness grows with alpha: area({_student(m, alpha)}) - area({_student(m, 1.0)})",
                  diff, "> 0", lambda v: v > 0)


def _keeps_retain(models: Mapping, name: str) -> dict:
    teacher_name = models[name].get("teacher")
    teacher = (models.get(teacher_name) or {}).get("retain_accuracy") if teacher_name else None
    student = models[name].get("retain_accuracy")
    diff = None if teacher is None or student is None else teacher - student
    return _check(f"{name} keeps retain accuracy within {RETAIN_SLACK:g} of its teacher {teacher_name or '-'}: "
                  "teacher - student", diff, f"<= {RETAIN_SLACK:g}", lambda v: v <= RETAIN_SLACK + EPS)


def _student(m: str, alpha: float) -> str:
    return f"undo:{m}:alpha={alpha:g}"


def _alphas(results: Mapping, m: str) -> list[float]:
    """The alphas the setting asks for or that a student of m has, largest first."""
    listed = {float(a) for a in (results.get("setting") or {}).get("alphas") or []}
    present = {alpha_of(n) for n in results.get("models") or {} if n.startswith(f"undo:{m}:")}
    return sorted(listed | present, reverse=True)


def gap_of(models: Mapping, name: str) -> float | None:
    """Share of its method's unlearned-to-gold area gap that a model closes (None for base, gold, or missing data)."""
    m = method_of(name)
    if m is None:
        return None
    areas = [area_of(models.get(n) or {}) for n in (f"unlearned:{m}", name, "gold")]
    return None if None in areas else gap_closed(*areas)


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
    models = results.get("models") or {}
    steps = sorted(set().union(*(relearn_curve(model)[0] for model in models.values())))
    header = ["model", "retain", "forget", *(f"@{s}" for s in steps), "relearning area", "gap closed",
              "compute steps", "compute tokens"]
    rows = [header, ["---"] + ["---:"] * (len(header) - 1)]
    for name in ordered_models(results):
        model = models[name]
        curve = dict(zip(*relearn_curve(model)))
        compute = model.get("compute") or {}
        budget = compute.get("stopped_by_criterion") is False  # a student that ran out of steps
        rows.append([name, _num(model.get("retain_accuracy")), _num(model.get("forget_accuracy")),
                     *(_num(curve.get(s)) for s in steps), _num(area_of(model)), _num(gap_of(models, name)),
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
    out = []
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
                 f"relearning area falls with alpha: {'yes' if line['area_falls'] else 'no'}.")
        out.append(text)
    return "\n".join(out) or "Fewer than two students of any method: no line to fit."


def _frontier_lines(results: Mapping) -> str:
    steps = comparisons.attack_steps(results)
    if not steps:
        return "No relearning curves."
    out = []
    for step in steps:
        front = comparisons.frontier(comparisons.points_at(results, step))
        out.append(f"- after {step} steps: frontier " + ", ".join(f"{n} ({r:.3f}, {f:.3f})" for n, r, f in front))
    out.append(f"- after the longest attack ({steps[-1]} steps): {comparisons.undo_verdict(results, steps[-1])}.")
    return "(retain accuracy, forget accuracy after the attack) of the non-dominated models:\n\n" + "\n".join(out)


_LEGEND = """\
- **retain / forget**: accuracy on the retain and forget evaluation problems.
- **@N**: forget accuracy of the strongest relearning attacker after N steps (@0: the model before the attack).
- **relearning area**: area under that curve divided by the step budget, in [0, 1]; lower = more robust.
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
