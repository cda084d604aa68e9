"""Do the arithmetic testbed's recipes hold on any seed? Pretraining and every unlearning method, per seed.

    .venv/bin/python bench/recipes.py --out runs/recipes [--seeds 0,1,2] [--methods graddiff,maxent,...]

For each seed: the base and gold models (launch/pretrain.py) and each method's unlearned model
(launch/unlearn.py) at the experiment's full budgets and that seed, the stages `launch/undo.py --seeds`
runs (same directories, OUT/seed-N, so that command reuses them). Finished stages are skipped: run it
again to continue. Each model is then scored again by launch/evaluate.py on --per-format held-out problems
per operation and format (default 400, OUT/seed-N/recipes-eval/): the stages' own final evaluations use
100, whose sampling error (+-0.02 at 0.95) is as large as the margins being checked. Prints one row per
model and seed, then each target's verdict over every seed:

- base: equation accuracy >= 0.95 on each of + - * /; gold: >= 0.95 on + and - (the operations it saw);
- each method: forget accuracy (mean of * and /, equations and word problems) <= 0.05, and retain
  accuracy >= 0.90 x that seed's base model's.
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, as in launch/

from distill.cache.fingerprint import teacher_fingerprint
from distill.knobs import at_least, checked, listed, non_negative
from unlearn.experiment import Settings, build_stages, model_dirs
from unlearn.methods import METHODS
from unlearn.pipeline import Pipeline

PRETRAIN_MIN, FORGET_MAX, RETAIN_SHARE_MIN = 0.95, 0.05, 0.90


REPO = Path(__file__).resolve().parents[1]


def run_seed(out: Path, seed: int, methods: list[str], nproc: int, jobs: int, per_format: int) -> dict[str, dict]:
    settings = Settings(out / f"seed-{seed}", methods, [], seed=seed)
    stages = [s for s in build_stages(settings) if not s.name.startswith("relearn:")]
    Pipeline(settings.out, stages, nproc, "ds_configs/zero3.json", overwrite=False, jobs=jobs).run()
    return {name: rescore(settings.out / "recipes-eval" / f"{run.name}.json", run, per_format)
            for name, run in model_dirs(settings).items()}


def rescore(path: Path, model: Path, per_format: int) -> dict:
    """launch/evaluate.py's scores of `model` on `per_format` problems per operation and format (reused
    when a finished scoring of these very weights at the same size is on disk: a model redone under a new
    recipe is scored again)."""
    model_id = teacher_fingerprint(model)  # its config and the bytes of its weights
    if path.is_file():
        scores = json.loads(path.read_text())
        if set(scores["counts"].values()) == {per_format} and scores.get("model_fingerprint") == model_id:
            return scores
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    subprocess.run([sys.executable, "launch/evaluate.py", "--model", str(model), "--out", str(tmp), "--device", "cpu",
                    "--per-format", str(per_format)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    scores = {**json.loads(tmp.read_text()), "model_fingerprint": model_id}
    tmp.write_text(json.dumps(scores, indent=1))
    tmp.replace(path)
    return scores


def verdicts(name: str, entry: dict, base: dict) -> dict[str, tuple[float, bool]]:
    """{target: (value, met)} for one model of one seed."""
    eq = entry["equation_accuracy"]
    if name == "base":
        return {f"equation {op} >= {PRETRAIN_MIN}": (eq[op], eq[op] >= PRETRAIN_MIN) for op in "+-*/"}
    if name == "gold":
        return {f"equation {op} >= {PRETRAIN_MIN}": (eq[op], eq[op] >= PRETRAIN_MIN) for op in "+-"}
    share = entry["retain_accuracy"] / base["retain_accuracy"]
    return {f"forget <= {FORGET_MAX}": (entry["forget_accuracy"], entry["forget_accuracy"] <= FORGET_MAX),
            f"retain/base >= {RETAIN_SHARE_MIN}": (share, share >= RETAIN_SHARE_MIN)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/recipes")
    p.add_argument("--seeds", type=listed(int, non_negative), default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--per-format", type=checked(int, at_least(1)), default=400,
                   help="held-out problems per operation and format in the rescoring")
    args = p.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    figures: dict = {}
    for seed in args.seeds:
        figures[seed] = run_seed(Path(args.out), seed, methods, args.nproc, args.jobs, args.per_format)
    rows, missed = [], []
    for seed, models in figures.items():
        for name, entry in models.items():
            for target, (value, met) in verdicts(name, entry, models["base"]).items():
                rows.append({"seed": seed, "model": name, "target": target, "value": value, "met": met})
                if not met:
                    missed.append(f"seed {seed} {name} {target} ({value:.3f})")
    print(f"{'seed':>4}  {'model':<20} {'retain':>7} {'forget':>7} {'retain/base':>11}  equations + - * /")
    for seed, models in figures.items():
        for name, e in models.items():
            eq = " ".join(f"{e['equation_accuracy'][op]:.3f}" for op in "+-*/")
            print(f"{seed:>4}  {name:<20} {e['retain_accuracy']:7.3f} {e['forget_accuracy']:7.3f} "
                  f"{e['retain_accuracy'] / models['base']['retain_accuracy']:11.3f}  {eq}")
    print("targets   " + ("all met on every seed" if not missed else "MISSED: " + "; ".join(missed)))
    print(json.dumps({"rows": rows, "models": {str(s): m for s, m in figures.items()}}, sort_keys=True))


if __name__ == "__main__":
    main()
