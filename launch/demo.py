"""The demo on the built-in arithmetic testbed: what exists of the UNDO pipeline so far.

Pretrains the base model (all four operations) and the data-filtered gold standard (+ and - only)
on 2 DeepSpeed ZeRO-3 ranks, scores both, and prints a table. A stage whose output is already
finished is reused, so an interrupted demo continues where it stopped.

    make demo            # == .venv/bin/python launch/demo.py --runs runs --nproc 2
"""

import sys
from pathlib import Path

# `python launch/demo.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import subprocess
import time

from distill.launcher import REPO, run_stage
from distill.rundir import SUMMARY


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs", help="directory for every stage's output")
    p.add_argument("--nproc", type=int, default=2, help="DeepSpeed ranks per stage")
    p.add_argument("--ds_config", default="ds_configs/zero3.json")
    return p.parse_args()


def pretrain(out: Path, extra: list[str], args) -> None:
    if (out / SUMMARY).is_file():
        print(f"reusing finished run {out}")
        return
    run_stage("launch/pretrain.py", ["--ds_config", args.ds_config, "--out", str(out), *extra], args.nproc)


def evaluate(model: Path) -> dict:
    out = model / "eval.json"
    subprocess.run([sys.executable, str(REPO / "launch/evaluate.py"), "--model", str(model), "--out", str(out)],
                   check=True, cwd=REPO)
    return json.loads(out.read_text())


def fmt(x) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def main():
    args = parse_args()
    runs = Path(args.runs)
    t0 = time.time()
    models = {"base": (runs / "base", []), "gold": (runs / "gold", ["--filter-forget"])}
    for out, extra in models.values():
        pretrain(out, extra, args)
    results = {name: evaluate(out) for name, (out, _) in models.items()}
    print(f"\nArithmetic testbed, held-out problems, greedy decoding, exact match ({time.time() - t0:.0f} s)")
    print("model  | equations  +      -      *      /    | word problems  +      -      *      /    "
          "| retain | forget")
    for name, r in results.items():
        eq, word = r["equation_accuracy"], r["word_accuracy"]
        print(f"{name:6s} |          " + "  ".join(fmt(eq[op]) for op in "+-*/") + " |              "
              + "  ".join(fmt(word[op]) for op in "+-*/")
              + f" | {fmt(r['retain_accuracy'])}  | {fmt(r['forget_accuracy'])}")
    print("(retain = mean of + and -, forget = mean of * and /, each over equations and word problems)")
    (runs / "demo_results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
