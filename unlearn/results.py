"""Gather the experiment's stage outputs into results.json (the shape `unlearn/report.py` reads)."""

from __future__ import annotations

import json
from pathlib import Path

from distill import metrics, rundir
from unlearn.experiment import Settings, model_dirs, relearn_file


def _compute(run: Path, summary: dict) -> dict:
    """Optimizer steps and training tokens of the stage that made the model."""
    stage = summary.get("stage")
    if stage == "distill":
        return {"stage": stage, "steps": summary["steps"], "tokens": summary["tokens"], "flops": summary["flops"],
                "stopped_by_criterion": summary["stopped_by_criterion"]}
    records = metrics.read_metrics(run / rundir.METRICS)
    tokens = sum(v for r in records for k, v in r.items()  # target tokens; *_seqs counts sequences
                 if k.startswith("tokens/") and not k.endswith("_seqs"))
    return {"stage": stage, "steps": summary["steps"], "tokens": int(tokens)}


def _relearn(path: Path) -> dict | None:
    """The attack's strongest-attacker curve under its metric's key ("metric" names it) and its area."""
    if not path.is_file():
        return None
    r = json.loads(path.read_text())
    key = r.get("metric", "forget_accuracy")  # attacks recorded before the text task had accuracy only
    return {"steps": r["steps"], "metric": key, key: r[key], "best_lr": r["best_lr"],
            "area": r["area"], "lrs": r["plan"]["lrs"], "seeds": r["plan"]["seeds"]}


def model_entry(s: Settings, name: str, run: Path) -> dict | None:
    summary_path = run / rundir.SUMMARY
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    ev, cap = summary["evaluation"], s.capability
    entry = {cap.retain: ev[cap.retain], cap.forget: ev[cap.forget], "dir": str(run),
             "compute": _compute(run, summary)}
    if "equation_accuracy" in ev:  # arithmetic: per operation, what the recipes are checked on
        entry["equation_accuracy"] = ev["equation_accuracy"]
    if name.startswith(("unlearned:", "undo:")):
        entry["method"] = name.split(":")[1]
    if name.startswith("undo:"):
        entry.update(alpha=summary["alpha"], beta=summary["beta"], teacher=f"unlearned:{entry['method']}")
    if name.startswith("oracle:"):
        # by step, the last record winning: a resumed run logs the steps after its checkpoint again
        loss = {r["step"]: r["loss/kd"] for r in metrics.read_metrics(run / rundir.METRICS) if "loss/kd" in r}
        entry.update(teacher="gold", distill_loss={"steps": sorted(loss), "loss": [loss[k] for k in sorted(loss)]})
        entry["compute"]["stopped_by_criterion"] = None  # trained for the whole budget by design: no criterion
    relearn = _relearn(relearn_file(s, name))
    if relearn is not None:
        entry["relearn"] = relearn
    return entry


def _attack_plan(s: Settings) -> dict:
    """The attack's grid as the attacks recorded it (every model is attacked with the same one)."""
    for name in model_dirs(s):
        path = relearn_file(s, name)
        if path.is_file():
            plan = json.loads(path.read_text())["plan"]
            return {k: plan[k] for k in ("lrs", "seeds", "steps", "eval_every")}
    return {}


def collect(s: Settings, command: str, seconds: dict, wall_seconds: float | None = None, jobs: int = 1,
            reused: list[str] | tuple = ()) -> dict:
    """results.json: the settings, each model's entry, and the time taken. `seconds` holds each stage's own
    wall time, for a stage `reused` (finished earlier, skipped now) the time it took when it ran; with
    jobs > 1 stages overlap, so `wall_seconds` (this invocation) is less than their sum."""
    models = {}
    for name, run in model_dirs(s).items():
        entry = model_entry(s, name, run)
        if entry is not None:
            models[name] = entry
    return {"setting": {"name": s.setting, "capability": s.capability.to_json(), "quick": s.quick,
                        "command": command, "methods": s.methods, "alphas": s.alphas, "line": s.line,
                        "retain_gap": s.retain_gap, "oracle_matching": s.oracle_matching,
                        "attack": {**_attack_plan(s), "eval": s.attack_eval}},
            "wall_seconds": wall_seconds, "jobs": jobs, "stage_seconds": seconds,
            "reused_stages": list(reused), "models": models}
