"""The paper's three comparisons, computed from the pipeline's results dict (shape in unlearn/report.py).

- the method grid: per unlearning method, the unlearned model against its Unlearn-and-Distill student
  (alpha = 1, else its largest alpha) and gold, with the unlearned model's initial suppression (weak
  suppression leaks through distillation: a teacher that still answers teaches the answers);
- the alpha line: per method, the students' relearning area against their distillation compute (steps,
  and FLOPs where recorded), a least-squares line and its R^2;
- the frontier under attack: retain accuracy against forget accuracy after 0 steps, a moderate and the
  longest attack, the non-dominated models, and whether an UNDO student dominates every other model.
"""

from __future__ import annotations

from collections.abc import Mapping

from unlearn.capability import ACCURACY, Capability, capability_of
from unlearn.plots import area_of, methods, ordered_models, relearn_curve, students_of

LEAK_FORGET = 0.10  # an unlearned model above this forget accuracy has suppressed the domain too weakly
# (an accuracy threshold: on cross-entropy no such line is drawn)


def _student_of(models: Mapping, m: str) -> str | None:
    """The method's Unlearn-and-Distill student: alpha = 1 if present, else its largest alpha."""
    found = students_of(models, m)
    return f"undo:{m}:alpha={found[-1][0]:g}" if found else None


def method_grid(results: Mapping) -> list[dict]:
    """One row per method with an unlearned model: its initial forget accuracy, the areas of unlearned,
    student and gold, whether the student relearns less, and whether suppression was weak (accuracy only)."""
    models, cap = results.get("models") or {}, capability_of(results)
    gold = area_of(models.get("gold") or {})
    rows = []
    for m in methods(results):
        unlearned = models.get(f"unlearned:{m}")
        if unlearned is None:
            continue
        student = _student_of(models, m)
        s_model = models.get(student) or {}
        u_area, s_area = area_of(unlearned), area_of(s_model)
        below = None if u_area is None or s_area is None else cap.score(s_area) < cap.score(u_area)
        forget = unlearned.get(cap.forget)
        rows.append({"method": m, "initial_forget": forget, "unlearned_area": u_area, "student": student,
                     "student_forget": s_model.get(cap.forget), "student_area": s_area, "gold_area": gold,
                     "student_below": below,
                     "weak_suppression": cap.higher_is_capable and forget is not None and forget > LEAK_FORGET})
    return rows


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float] | None:
    """Least squares y = intercept + slope x: (slope, intercept, R^2); None for fewer than 2 distinct x."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    sst = sum((y - my) ** 2 for y in ys)
    sse = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    return slope, intercept, (1.0 - sse / sst) if sst > 0 else 1.0


def monotone(values: list[float], rising: bool) -> bool:
    """In order (ties allowed) and not flat from end to end."""
    pairs = list(zip(values, values[1:]))
    if not pairs:
        return False
    ok = all(b >= a for a, b in pairs) if rising else all(b <= a for a, b in pairs)
    return ok and values[-1] != values[0]


def alpha_line(results: Mapping, m: str) -> dict | None:
    """The method's students by alpha with their steps to criterion, FLOPs and areas; the fits of area on
    steps and on FLOPs; whether steps rise and robustness grows (the area moves away from capable: falls for
    an accuracy, rises for a cross-entropy) with alpha. None without two such students."""
    models, cap = results.get("models") or {}, capability_of(results)
    rows = [(a, (s.get("compute") or {}).get("steps"), (s.get("compute") or {}).get("flops"), area_of(s))
            for a, s in students_of(models, m)]
    rows = [r for r in rows if r[1] is not None and r[3] is not None]
    if len(rows) < 2:
        return None
    alphas, steps, flops, areas = (list(col) for col in zip(*rows))
    have_flops = all(f is not None for f in flops)
    return {"alphas": alphas, "steps": steps, "flops": flops if have_flops else None, "areas": areas,
            "fit_steps": linear_fit([float(s) for s in steps], areas),
            "fit_flops": linear_fit([float(f) for f in flops], areas) if have_flops else None,
            "steps_rise": monotone([float(s) for s in steps], rising=True),
            "robustness_grows": monotone(areas, rising=not cap.higher_is_capable)}


def attack_steps(results: Mapping) -> list[int]:
    """The attack strengths the frontier is drawn at: no attack, a moderate one (the evaluated step nearest
    0.4 x the longest: the paper's 40 and 500 steps, scaled to the attack run here) and the longest."""
    steps = sorted(set().union(*(relearn_curve(m)[0] for m in (results.get("models") or {}).values())))
    if not steps:
        return []
    last = steps[-1]
    moderate = min(steps, key=lambda s: (abs(s - 0.4 * last), s))
    return sorted({steps[0], moderate, last})


def forget_at(model: Mapping, step: int) -> float | None:
    return dict(zip(*relearn_curve(model))).get(step)


def points_at(results: Mapping, step: int) -> list[tuple[str, float, float]]:
    """(name, retain metric, forget metric after `step` attack steps) for every model with both."""
    models, cap = results.get("models") or {}, capability_of(results)
    out = []
    for name in ordered_models(results):
        retain, forget = models[name].get(cap.retain), forget_at(models[name], step)
        if retain is not None and forget is not None:
            out.append((name, retain, forget))
    return out


def dominates(a: tuple[str, float, float], b: tuple[str, float, float], cap: Capability = ACCURACY) -> bool:
    """a is at least as good as b on both (retain more capable, forget less) and better on one."""
    ar, af, br, bf = cap.score(a[1]), cap.score(a[2]), cap.score(b[1]), cap.score(b[2])
    return ar >= br and af <= bf and (ar > br or af < bf)


def frontier(points: list[tuple[str, float, float]], cap: Capability = ACCURACY) -> list[tuple[str, float, float]]:
    """The non-dominated points, by increasing retain metric."""
    front = [p for p in points if not any(dominates(q, p, cap) for q in points if q is not p)]
    return sorted(front, key=lambda p: p[1])


def undo_verdict(results: Mapping, step: int) -> str:
    """Whether one UNDO student dominates every model that is neither a student nor gold after `step`
    attack steps; if none does, the student that comes closest and what beats it, by how much."""
    pts, cap = points_at(results, step), capability_of(results)
    students = [p for p in pts if p[0].startswith("undo:")]
    others = [p for p in pts if p[0].startswith(("base", "unlearned:"))]  # gold and the oracle students are
    # references (never trained on the forget domain, or trained on its absence), not rivals
    if not students or not others:
        return "no UNDO student and other model to compare"
    winners = [s for s in students if all(dominates(s, o, cap) for o in others)]
    if winners:
        return f"{winners[0][0]} dominates every other non-gold model ({', '.join(o[0] for o in others)})"

    def beaten_by(s):
        return [o for o in others if not dominates(s, o, cap)]

    best = min(students, key=lambda s: len(beaten_by(s)))
    lines = [f"{o[0]} (retain {o[1] - best[1]:+.3f}, forget {o[2] - best[2]:+.3f} against it)" for o in beaten_by(best)]
    return (f"no UNDO student dominates every other model; the closest, {best[0]}, does not dominate: "
            + "; ".join(lines))
