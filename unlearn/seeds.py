"""The experiment on several seeds: each seed's results.json side by side, and their mean and spread.

    {"seeds": [0, 1, 2], "per_seed": {"0": results, ...},
     "summary": {model: {metric: {"mean", "std", "n"}}, ...},
     "checks": [{"check", "passed_on", "seeds"}],
     "alpha_lines": {method: {"alphas", "steps", "areas", "fit_steps", "steps_rise", "robustness_grows",
                              "steps_rise_on", "robustness_grows_on"}}}

std is the sample standard deviation over the seeds that have the value (0 for one seed). A student's
"budget_stops" counts the seeds on which it ran out of steps before its stop criterion.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

from unlearn import comparisons, plots
from unlearn.capability import ACCURACY, Capability, capability_of
from unlearn.plots import area_of
from unlearn.report import acceptance_checks, gap_of

OTHER_METRICS = ("relearning_area", "gap_closed", "compute_steps")  # after the capability's retain and forget


def metric_names(cap: Capability) -> tuple[str, ...]:
    return (cap.retain, cap.forget, *OTHER_METRICS)


def model_values(models: Mapping, name: str, cap: Capability = ACCURACY) -> dict[str, float | None]:
    """The summarised metrics of one model of one seed's results."""
    model = models[name]
    return {cap.retain: model.get(cap.retain), cap.forget: model.get(cap.forget),
            "relearning_area": area_of(model), "gap_closed": gap_of(models, name, cap),
            "compute_steps": (model.get("compute") or {}).get("steps")}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def aggregate(per_seed: Mapping[int, Mapping]) -> dict:
    """Mean and spread of every model's metrics over the seeds, and each acceptance check's pass count."""
    names = sorted({n for r in per_seed.values() for n in r.get("models") or {}})
    cap = capability_of(next(iter(per_seed.values()), {}))  # every seed runs the same setting
    summary = {}
    for name in names:
        values = [model_values(r["models"], name, cap) for r in per_seed.values()
                  if name in (r.get("models") or {})]
        summary[name] = {k: mean_std([v[k] for v in values if v[k] is not None])
                         for k in metric_names(cap) if any(v[k] is not None for v in values)}
        stops = [(r["models"][name].get("compute") or {}).get("stopped_by_criterion")
                 for r in per_seed.values() if name in (r.get("models") or {})]
        if any(s is not None for s in stops):
            summary[name]["budget_stops"] = sum(s is False for s in stops)
    checks: dict[str, list[int]] = {}
    for seed, results in per_seed.items():
        for check in acceptance_checks(results):
            checks.setdefault(check["check"], [])
            if check["passed"]:
                checks[check["check"]].append(seed)
    return {"seeds": list(per_seed), "metrics": list(metric_names(cap)),
            "per_seed": {str(k): v for k, v in per_seed.items()}, "summary": summary,
            "checks": [{"check": c, "passed_on": seeds, "seeds": len(per_seed)} for c, seeds in checks.items()],
            "alpha_lines": alpha_lines(per_seed)}


def alpha_lines(per_seed: Mapping[int, Mapping]) -> dict[str, dict]:
    """Per method with students at two or more alphas on every seed: at each alpha they all share, the
    steps to criterion and the relearning area (mean and spread over the seeds); the fit of area on steps
    over every seed's points; whether the mean steps rise and the mean robustness grows with alpha, and on
    which seeds each held alone. Two neighbouring alphas can swap order on one seed within the attack's
    spread; the trend is the claim, and the means over seeds are its estimate."""
    if not per_seed:
        return {}
    cap = capability_of(next(iter(per_seed.values())))
    out = {}
    for m in dict.fromkeys(m for r in per_seed.values() for m in plots.methods(r)):
        lines = {seed: comparisons.alpha_line(r, m) for seed, r in per_seed.items()}
        if any(line is None for line in lines.values()):
            continue
        alphas = sorted(set.intersection(*(set(line["alphas"]) for line in lines.values())))
        if len(alphas) >= 2:
            out[m] = _line_over_seeds(lines, alphas, cap)
    return out


def _line_over_seeds(lines: Mapping[int, Mapping], alphas: list[float], cap: Capability) -> dict:
    steps, areas = _by_alpha(lines, alphas, "steps"), _by_alpha(lines, alphas, "areas")
    points = [(s, y) for ss, ys in zip(steps, areas) for s, y in zip(ss, ys)]
    mean_steps, mean_areas = [mean_std(s) for s in steps], [mean_std(y) for y in areas]
    return {"alphas": alphas, "steps": mean_steps, "areas": mean_areas,
            "fit_steps": comparisons.linear_fit([s for s, _ in points], [y for _, y in points]),
            "steps_rise": comparisons.monotone([s["mean"] for s in mean_steps], rising=True),
            "robustness_grows": comparisons.monotone([y["mean"] for y in mean_areas],
                                                     rising=not cap.higher_is_capable),
            "steps_rise_on": [seed for seed, line in lines.items() if line["steps_rise"]],
            "robustness_grows_on": [seed for seed, line in lines.items() if line["robustness_grows"]]}


def _by_alpha(lines: Mapping[int, Mapping], alphas: list[float], key: str) -> list[list[float]]:
    """Per alpha, each seed's value of `key` in its alpha line."""
    return [[float(line[key][line["alphas"].index(a)]) for line in lines.values()] for a in alphas]


def seeds_markdown(agg: Mapping, command: str) -> str:
    seeds, names = agg["seeds"], agg.get("metrics") or metric_names(ACCURACY)
    lines = ["# UNDO on several seeds", f"Produced by `{command}`; seeds {', '.join(map(str, seeds))}; each seed's "
             "own report is in seed-N/report.md. Values are mean ± sample standard deviation over the seeds.", "",
             "| model | " + " | ".join(m.replace("_", " ") for m in names) + " | budget stops |",
             "| --- |" + " ---: |" * (len(names) + 1)]
    for name, values in agg["summary"].items():
        cells = [f"{values[m]['mean']:.3f} ± {values[m]['std']:.3f}" if m in values else "-" for m in names]
        stops = values.get("budget_stops")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'-' if stops is None else stops} |")
    lines += ["", "## Acceptance checks (seeds passing / seeds)", ""]
    lines += [f"- {len(c['passed_on'])}/{c['seeds']} {c['check']}" for c in agg["checks"]]
    if agg.get("alpha_lines"):
        lines += ["", "## The alpha line over seeds", ""]
        lines += [_alpha_line_text(m, line, len(seeds)) for m, line in agg["alpha_lines"].items()]
    return "\n".join(lines) + "\n"


def _alpha_line_text(m: str, line: Mapping, n_seeds: int) -> str:
    at = "; ".join(f"{a:g}: {s['mean']:,.0f} ± {s['std']:,.0f} steps, area {y['mean']:.3f} ± {y['std']:.3f}"
                   for a, s, y in zip(line["alphas"], line["steps"], line["areas"]))
    text = f"- **{m}** (mean ± spread over the seeds; {at}). "
    if line["fit_steps"]:
        slope, intercept, r2 = line["fit_steps"]
        text += f"Every seed's points: area = {intercept:.3f} {slope:+.3g} per step, R^2 {r2:.3f}. "
    yes = {True: "yes", False: "no"}
    return text + (f"On the means, steps to criterion rise with alpha: {yes[line['steps_rise']]} "
                   f"({len(line['steps_rise_on'])}/{n_seeds} seeds alone); robustness grows with alpha: "
                   f"{yes[line['robustness_grows']]} ({len(line['robustness_grows_on'])}/{n_seeds} seeds alone).")
