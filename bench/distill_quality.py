"""Student quality from the cache against the online teacher, at the same settings and seeds.

    .venv/bin/python bench/distill_quality.py --teacher runs/unlearned-maxent --cache runs/cache-maxent \\
        --out runs/quality [--steps 1200] [--seeds 0,1] [--alpha 1] [--arms cache,online] [--jobs 2]

For each seed, trains the student once per arm with `launch/distill.py` at the settings the experiment
uses for that alpha (unlearn.experiment.student_args): reading --cache; with the teacher online on rows
of its own; or (online-rows) online on the cache's rows in the cached run's order, so that only the
targets differ. Every arm trains exactly --steps steps (the stop criterion is off) and is scored on the
same held-out problems. The runs are pipeline stages: finished ones are reused
when the command is repeated, interrupted ones resume, and up to --jobs run at once.
The last line is one JSON object: final retain (and forget) accuracy per arm and seed, the means per
arm, and per other arm the largest |cache - arm| retain difference over the seeds.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json

from distill.cache import open_cache
from distill.rundir import SUMMARY
from launch.distill import DEFAULTS
from unlearn.experiment import student_args
from unlearn.pipeline import Pipeline, Stage

ARMS = ("cache", "online", "online-rows")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/unlearned-maxent")
    p.add_argument("--cache", default="runs/cache-maxent", help="the teacher's cache (launch/precompute.py)")
    p.add_argument("--out", required=True, help="directory of the students and the pipeline record")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=1200, help="optimizer steps of every student (the default budget)")
    p.add_argument("--seeds", default="0,1", help="comma-separated run seeds (init, data order)")
    p.add_argument("--eval-every", type=int, default=300, help="validation evaluations along the way (curves)")
    p.add_argument("--final-eval-per-format", type=int, default=300, help="test problems per op and format")
    p.add_argument("--arms", default="cache,online",
                   help="from cache, online (the teacher online, on rows of its own), online-rows (the teacher "
                        "online on the cache's rows in the cached run's order: only the targets differ from cache)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--nproc", type=int, default=2)
    args = p.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.arms = [a for a in args.arms.split(",") if a]
    if not set(args.arms) <= set(ARMS) or "cache" not in args.arms or len(args.arms) < 2:
        p.error(f"--arms {args.arms}: cache and at least one of online, online-rows")
    # the stages run from the repository root: make the user's relative paths absolute first
    args.teacher, args.cache, args.out = (str(Path(x).resolve()) for x in (args.teacher, args.cache, args.out))
    return args


def build_stages(args) -> list[Stage]:
    common = ["--teacher", args.teacher, "--alpha", f"{args.alpha:g}", *student_args(args.alpha),
              "--steps", str(args.steps), "--retain-gap", "-2", "--eval-every", str(args.eval_every),
              "--final-eval-per-format", str(args.final_eval_per_format)]
    targets = {"cache": ["--cache", args.cache], "online": ["--online"],
               "online-rows": ["--online", "--rows-from-cache", args.cache]}
    return [Stage(f"{arm}:seed{seed}", "launch/distill.py", Path(args.out) / f"{arm}-seed{seed}",
                  [*common, *targets[arm], "--seed", str(seed)]) for seed in args.seeds for arm in args.arms]


def main():
    args = parse_args()
    if not (Path(args.teacher) / "model.safetensors").is_file():
        sys.exit(f"teacher {args.teacher} not found: run `make demo` first (or pass --teacher)")
    rows, wanted = open_cache(args.cache).plan.records, args.steps * DEFAULTS.global_batch
    if rows < wanted:
        print(f"note: the cache holds {rows} rows and a student reads {wanted}: the cached arm reads some rows "
              "twice, the online arm never", flush=True)
    stages = build_stages(args)
    Pipeline(Path(args.out), stages, args.nproc, "ds_configs/zero3.json", overwrite=False, jobs=args.jobs).run()
    result = {"alpha": args.alpha, "steps": args.steps, "seeds": args.seeds, "retain": {}, "forget": {}}
    for stage in stages:
        arm, seed = stage.name.split(":")
        final = json.loads((stage.out / SUMMARY).read_text())["evaluation"]
        result["retain"].setdefault(arm, []).append(final["retain_accuracy"])
        result["forget"].setdefault(arm, []).append(final["forget_accuracy"])
        print(f"{arm:6s} {seed}: retain {final['retain_accuracy']:.3f} forget {final['forget_accuracy']:.3f}")
    cache = result["retain"]["cache"]
    result["mean_retain"] = {arm: sum(v) / len(v) for arm, v in result["retain"].items()}
    result["max_abs_retain_diff"] = {arm: max(abs(c - o) for c, o in zip(cache, result["retain"][arm]))
                                     for arm in args.arms if arm != "cache"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
