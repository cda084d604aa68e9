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
            "checks": [{"check": c, "passed_on": seeds, "seeds": len(per_seed)} for c, seeds in checks.items()]}


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
    return "\n".join(lines) + "\n"
