"""The demo on the built-in arithmetic testbed: what exists of the UNDO pipeline so far.

Pretrains the base model (all four operations) and the data-filtered gold standard (+ and - only),
unlearns the forget operations (* and /) from the base model with each chosen method, precomputes the
first method's teacher-logit cache and distills students from it (UNDO at each alpha), every stage on 2
DeepSpeed ZeRO-3 ranks, and prints one table. A stage whose output is already finished
is reused, so an interrupted demo continues where it stopped.

    make demo                                                     # MaxEnt only
    .venv/bin/python launch/demo.py --methods graddiff,maxent,rmu,npo,simnpo   # the README's table
"""

import sys
from pathlib import Path

# `python launch/demo.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import time

from distill.launcher import run_stage
from distill.rundir import SUMMARY
from unlearn.methods import METHODS


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs", help="directory for every stage's output")
    p.add_argument("--nproc", type=int, default=2, help="DeepSpeed ranks per stage")
    p.add_argument("--ds_config", default="ds_configs/zero3.json")
    p.add_argument("--methods", default="maxent", help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--alphas", default="0.6", help="students to distill from the first method's teacher "
                   "(comma-separated alphas; 1 = fresh init, Unlearn-and-Distill; '' for none)")
    args = p.parse_args()
    args.alphas = [float(a) for a in args.alphas.split(",") if a]
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}: expected some of {', '.join(METHODS)}")
    return args


def stage(script: str, out: Path, extra: list[str], args) -> float | None:
    """Run a stage unless its output is finished; returns its wall time (None when reused)."""
    if (out / SUMMARY).is_file() or (out / "manifest.json").is_file():
        print(f"reusing finished run {out}")
        return None
    t0 = time.time()
    run_stage(script, ["--ds_config", args.ds_config, "--out", str(out), *extra], args.nproc)
    return time.time() - t0


def fmt(x) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def print_table(rows: dict[str, dict], base_retain: float) -> None:
    print("\nArithmetic testbed, held-out problems, greedy decoding, exact match (launch/evaluate.py scoring)")
    print(f"{'model':22s} | equations  +      -      *      /    | word  +      -      *      /    "
          "| retain | forget | retain/base | time")
    for name, r in rows.items():
        ev = r["evaluation"]
        eq, word = ev["equation_accuracy"], ev["word_accuracy"]
        took = "reused" if r["seconds"] is None else f"{r['seconds']:.0f} s"
        print(f"{name:22s} |          " + "  ".join(fmt(eq[op]) for op in "+-*/") + " |      "
              + "  ".join(fmt(word[op]) for op in "+-*/")
              + f" | {fmt(ev['retain_accuracy'])}  | {fmt(ev['forget_accuracy'])}  | "
              f"{ev['retain_accuracy'] / base_retain:10.3f}  | {took}")
    print("(retain = mean of + and -, forget = mean of * and /, each over equations and word problems)")


def main():
    args = parse_args()
    runs = Path(args.runs)
    plan = {"base": ("launch/pretrain.py", runs / "base", []),
            "gold": ("launch/pretrain.py", runs / "gold", ["--filter-forget"])}
    for m in args.methods:
        plan[f"unlearned:{m}"] = ("launch/unlearn.py", runs / f"unlearned-{m}",
                                  ["--model", str(runs / "base"), "--method", m])
    if args.alphas and args.methods:
        method = args.methods[0]
        teacher, cache = runs / f"unlearned-{method}", runs / f"cache-{method}"
        plan[f"cache:{method}"] = ("launch/precompute.py", cache, ["--teacher", str(teacher)])
        for alpha in args.alphas:
            beta = "1.0" if alpha == 1.0 else "0.1"
            lr = ["--lr", "2e-3", "--min-lr", "2e-4"] if alpha == 1.0 else ["--lr", "1e-3", "--min-lr", "1e-4"]
            plan[f"undo:{method}:alpha={alpha:g}"] = (
                "launch/distill.py", runs / f"undo-{method}-alpha{alpha:g}",
                ["--teacher", str(teacher), "--cache", str(cache), "--alpha", str(alpha), "--beta", beta, *lr])
    rows = {}
    for name, (script, out, extra) in plan.items():
        seconds = stage(script, out, extra, args)
        if name.startswith("cache:"):
            continue  # a cache has no evaluation of its own
        rows[name] = {"evaluation": json.loads((out / SUMMARY).read_text())["evaluation"], "seconds": seconds}
    print_table(rows, rows["base"]["evaluation"]["retain_accuracy"])
    (runs / "demo_results.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
