"""The experiment on several seeds: each seed's results.json side by side, and their mean and spread.

    {"seeds": [0, 1, 2], "per_seed": {"0": results, ...},
     "summary": {model: {metric: {"mean", "std", "n"}}, ...},
     "checks": [{"check", "passed_on", "seeds"}]}

std is the sample standard deviation over the seeds that have the value (0 for one seed). A student's
"budget_stops" counts the seeds on which it ran out of steps before its stop criterion.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

from unlearn.plots import area_of
from unlearn.report import acceptance_checks, gap_of

METRICS = ("retain_accuracy", "forget_accuracy", "relearning_area", "gap_closed", "compute_steps")


def model_values(models: Mapping, name: str) -> dict[str, float | None]:
    """The summarised metrics of one model of one seed's results."""
    model = models[name]
    return {"retain_accuracy": model.get("retain_accuracy"), "forget_accuracy": model.get("forget_accuracy"),
            "relearning_area": area_of(model), "gap_closed": gap_of(models, name),
            "compute_steps": (model.get("compute") or {}).get("steps")}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def aggregate(per_seed: Mapping[int, Mapping]) -> dict:
    """Mean and spread of every model's metrics over the seeds, and each acceptance check's pass count."""
    names = sorted({n for r in per_seed.values() for n in r.get("models") or {}})
    summary = {}
    for name in names:
        values = [model_values(r["models"], name) for r in per_seed.values() if name in (r.get("models") or {})]
        summary[name] = {k: mean_std([v[k] for v in values if v[k] is not None])
                         for k in METRICS if any(v[k] is not None for v in values)}
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
    return {"seeds": list(per_seed), "per_seed": {str(k): v for k, v in per_seed.items()}, "summary": summary,
            "checks": [{"check": c, "passed_on": seeds, "seeds": len(per_seed)} for c, seeds in checks.items()]}


def seeds_markdown(agg: Mapping, command: str) -> str:
    seeds = agg["seeds"]
    lines = ["# UNDO on several seeds", f"Produced by `{command}`; seeds {', '.join(map(str, seeds))}; each seed's "
             "own report is in seed-N/report.md. Values are mean ± sample standard deviation over the seeds.", "",
             "| model | " + " | ".join(m.replace("_", " ") for m in METRICS) + " | budget stops |",
             "| --- |" + " ---: |" * (len(METRICS) + 1)]
    for name, values in agg["summary"].items():
        cells = [f"{values[m]['mean']:.3f} ± {values[m]['std']:.3f}" if m in values else "-" for m in METRICS]
        stops = values.get("budget_stops")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'-' if stops is None else stops} |")
    lines += ["", "## Acceptance checks (seeds passing / seeds)", ""]
    lines += [f"- {len(c['passed_on'])}/{c['seeds']} {c['check']}" for c in agg["checks"]]
    return "\n".join(lines) + "\n"
