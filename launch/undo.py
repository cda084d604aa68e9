"""The whole UNDO experiment in one command: on the arithmetic testbed (what `make demo` runs), or in the
language setting (English kept, Korean forgotten).

    python launch/undo.py --out runs            # full budgets: ~35 min on 2 CPU cores
    python launch/undo.py --out /tmp/q --quick  # every stage at smoke-test budgets (a few minutes)
    python launch/undo.py --out runs/seeds --seeds 0,1,2   # once per seed; mean and spread in report.md
    python launch/undo.py --out runs/pareto --methods graddiff,maxent,rmu,npo,simnpo,sam,repnoise \\
        --alphas 0.2,0.4,0.6,0.8,1 --pareto               # the paper's comparisons: method grid, alpha line, frontier
    python launch/undo.py --out runs/compare --methods graddiff,maxent,rmu,npo,simnpo,sam,repnoise \\
        --alphas 1 --line maxent=0.2,0.4,0.6,0.8 --pareto   # the same comparisons, the alpha line for MaxEnt only
    python launch/undo.py --setting language --out runs/language   # Korean forgotten, English kept (see below)
    python launch/undo.py --out runs/oracle --oracle-matching --alphas ''   # the paper's first experiment

Pretrains the base model (all four operations) and the data-filtered gold standard (+ and - only),
unlearns * and / from the base with each method (MaxEnt by default), precomputes each teacher's logit
cache once, distills UNDO students at each alpha (1 = fresh init, Unlearn-and-Distill), runs the
relearning attack on every model, and writes OUT/results.json, OUT/report.md and PNG figures. Every
stage is a `deepspeed` job; a finished stage with unchanged settings is skipped, an interrupted one
resumes, so running the command again continues where it stopped.

--setting language (unlearn/language_setting.py): LibreOffice help pages in English and Korean from Debian
packages (fetched and cleaned into OUT/data on the first run, or --language-data DIR), a BPE tokenizer
trained on them (OUT/tokenizer), and every stage as its `--task text` command; the capability is per-token
cross-entropy on held-out pages (lower = more capable), and the students stop when their English
cross-entropy is within --retain-gap (relative, 5%) of their teacher's. --oracle-matching adds the gold
model's cache and two students matching it (from base, and fresh), each attacked (unlearn/oracle.py).
"""

import sys
from pathlib import Path

# `python launch/undo.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import shlex
import time

from distill.cli import Parser, run_main
from distill.errors import UserError
from distill.knobs import at_least_one, checked, listed, non_negative, unit_interval
from distill.rundir import write_json
from unlearn import language_setting
from unlearn.experiment import RETAIN_GAP, SETTINGS, Settings, build_stages
from unlearn.methods import METHODS
from unlearn.pipeline import Pipeline
from unlearn.report import acceptance_checks, write_report
from unlearn.results import collect
from unlearn.seeds import aggregate, seeds_markdown


def line_flag(text: str) -> tuple[str, tuple[float, ...]]:
    """--line METHOD=ALPHAS: (method, its extra alphas)."""
    method, sep, alphas = text.partition("=")
    if not sep or method.strip() not in METHODS:
        raise argparse.ArgumentTypeError(f"expected METHOD=ALPHAS with METHOD one of {', '.join(METHODS)}, "
                                         f"got {text!r}")
    values = listed(float, unit_interval)(alphas)
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"each alpha once, got {alphas!r}")
    return method.strip(), values


def parse_args(argv=None):
    p = Parser(description=__doc__)
    p.add_argument("--out", required=True, help="run directory: every stage's output, results and report")
    p.add_argument("--quick", action="store_true", help="smoke-test budgets for every stage (CI)")
    p.add_argument("--methods", default="maxent", help=f"unlearning methods, from {', '.join(METHODS)}")
    p.add_argument("--alphas", type=listed(float, unit_interval, allow_empty=True), default="1,0.6",
                   help="UNDO students per method (comma-separated, each in [0, 1]; '' for none)")
    p.add_argument("--line", type=line_flag, default=None, metavar="METHOD=ALPHAS",
                   help="the alpha line for one method at a fraction of the grid's cost: METHOD's students also at "
                        "ALPHAS (comma-separated, each in [0, 1]), the other methods' at --alphas only, e.g. "
                        "--alphas 1 --line maxent=0.2,0.4,0.6,0.8")
    p.add_argument("--setting", default="arithmetic", choices=SETTINGS,
                   help="arithmetic (the built-in testbed) or language (English kept, Korean forgotten)")
    p.add_argument("--language-data", default=None, metavar="DIR",
                   help=f"language: a directory with {', '.join(f + '.jsonl' for f in language_setting.FILES)} "
                        "(default: OUT/data, fetched and cleaned by unlearn.language_data when missing)")
    p.add_argument("--oracle-matching", action="store_true",
                   help="also distil the gold model (the oracle) into base (alpha 0) and into a fresh init "
                        "(alpha 1) for the whole budget, and attack both")
    p.add_argument("--retain-gap", type=checked(float), default=None,
                   help="a student trains until its validation retain metric is this close to its teacher's. "
                        f"Default: arithmetic {RETAIN_GAP['arithmetic']:g} (absolute accuracy: below the 0.05 the "
                        "results check on the test set, which leaves room for sampling noise); language "
                        f"{RETAIN_GAP['language']:g} (relative cross-entropy, the paper's)")
    p.add_argument("--nproc", type=checked(int, at_least_one), default=2, help="DeepSpeed ranks per stage")
    p.add_argument("--jobs", type=checked(int, at_least_one), default=2,
                   help="stages run at once when their inputs are ready (base beside gold, attacks beside "
                        "students); each then logs to OUT/logs/. On 2 CPU cores two jobs finish the demo sooner "
                        "than one: start-up, evaluation and saving of one overlap the other's training")
    p.add_argument("--ds_config", "--ds-config", dest="ds_config", default="ds_configs/zero3.json")
    p.add_argument("--overwrite", action="store_true", help="redo finished stages whose settings changed")
    p.add_argument("--pareto", action="store_true",
                   help="also unlearn with each method at the other values of its main setting (the method's "
                        "PARETO_GRID; at --quick one value) and attack each: points of the retain/forget frontier")
    p.add_argument("--seeds", type=listed(int, non_negative), default="0",
                   help="run the whole experiment once per seed (training stages' --seed), each in OUT/seed-N, and "
                        "report mean and spread in OUT/report.md; one seed (default 0) runs in OUT itself")
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        p.error(f"--methods: unknown {unknown}; expected some of {', '.join(METHODS)}")
    args.alphas = list(args.alphas)
    if len(set(args.alphas)) != len(args.alphas):
        p.error(f"--alphas {args.alphas}: each alpha once")
    if args.line is not None and args.line[0] not in args.methods:
        p.error(f"--line {args.line[0]}=...: {args.line[0]} is not among --methods {','.join(args.methods)}")
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds {list(args.seeds)}: each seed once")
    if args.language_data is not None and args.setting != "language":
        p.error("--language-data is for --setting language")
    if args.retain_gap is None:
        args.retain_gap = RETAIN_GAP[args.setting]
    return args


def settings_of(args, out: Path, seed: int, data: tuple = (None, None)) -> Settings:
    """The experiment's settings for one seed in `out` from the parsed flags."""
    line = {args.line[0]: list(args.line[1])} if args.line else {}
    return Settings(out, args.methods, args.alphas, args.quick, args.retain_gap, seed=seed, pareto=args.pareto,
                    line=line, setting=args.setting, data=data[0], tokenizer=data[1],
                    oracle_matching=args.oracle_matching)


def run_seed(args, out: Path, seed: int, command: str, data: tuple) -> dict:
    """The experiment on one seed in `out`: its stages, results.json, report.md and figures."""
    settings = settings_of(args, out, seed, data)
    pipeline = Pipeline(settings.out, build_stages(settings), args.nproc, args.ds_config, args.overwrite,
                        jobs=args.jobs)
    t0 = time.time()
    pipeline.run()
    wall = time.time() - t0
    results = collect(settings, command, pipeline.seconds, wall_seconds=wall, jobs=args.jobs,
                      reused=pipeline.reused)
    write_json(settings.out / "results.json", results)
    written = write_report(results, settings.out)
    print(f"[undo] seed {seed}: {wall / 60:.1f} min; wrote {settings.out / 'results.json'} and "
          f"{', '.join(str(p) for p in written)}")
    return results


def main():
    args = parse_args()
    if not Path(args.ds_config).is_file():
        raise UserError(f"--ds_config {args.ds_config}: no such file")
    command = "python launch/undo.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out, single = Path(args.out), len(args.seeds) == 1 and args.seeds[0] == 0
    data = (None, None)
    if args.setting == "language":  # corpora and tokenizer once, shared by every seed
        data = language_setting.prepare(out, Path(args.language_data) if args.language_data else None)
    per_seed = {seed: run_seed(args, out if single else out / f"seed-{seed}", seed, command, data)
                for seed in args.seeds}
    if single:
        results = per_seed[0]
        print((out / "report.md").read_text())
        failed = [c["check"] for c in acceptance_checks(results) if c["passed"] is False]
    else:
        agg = aggregate(per_seed)
        write_json(out / "results.json", agg)
        (out / "report.md").write_text(seeds_markdown(agg, command))
        print((out / "report.md").read_text())
        failed = [c["check"] for c in agg["checks"] if len(c["passed_on"]) < c["seeds"]]
    if failed and not args.quick:
        print(f"[undo] {len(failed)} acceptance check(s) did not pass on every seed (see report.md)")


if __name__ == "__main__":
    run_main(main)
