"""Distillation throughput: targets streamed from the cache against an online teacher, in one run.

    .venv/bin/python bench/distill.py [--teacher runs/unlearned-maxent] [--steps 80] [--nproc 2]

Runs, under the deepspeed launcher on the same machine and settings: (1) precompute of a cache holding
exactly the rows the students read, (2) `launch/distill.py --cache` and (3) `launch/distill.py --online`,
each for --steps steps with no evaluation or checkpoint. Throughput is tokens per second of training
(from the metrics log, first 10 steps excluded as warm-up). The cost of an alpha sweep of 4 students is
derived from the measured times: 4 online runs against one precompute plus 4 cached runs (wall time,
start-up included). The last line is one JSON object with at least the key `cached_over_online`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import subprocess
import tempfile
import time

from distill.launcher import REPO, deepspeed_command, stage_env
from distill.metrics import read_metrics


def run(script: str, args: list[str], nproc: int) -> float:
    t0 = time.time()
    result = subprocess.run(deepspeed_command(script, args, nproc), env=stage_env(), cwd=REPO,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{script} failed:\n{result.stderr[-3000:]}")
    return time.time() - t0


def tokens_per_s(out: Path) -> float:
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "elapsed_s" in r]
    steady = rows[10:]
    tokens = sum(r["tokens/kd"] for r in steady[1:])
    return tokens / (steady[-1]["elapsed_s"] - steady[0]["elapsed_s"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/unlearned-maxent")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--nproc", type=int, default=2)
    args = p.parse_args()
    if not (Path(args.teacher) / "model.safetensors").is_file():
        sys.exit(f"teacher {args.teacher} not found: run `make demo` first (or pass --teacher)")
    ds = ["--ds_config", str(REPO / "ds_configs/zero3.json")]
    common = ["--teacher", args.teacher, "--steps", str(args.steps), "--global-batch", str(args.global_batch),
              "--eval-every", "0", "--save-every", "0", "--final-eval-per-format", "1", "--eval-per-format", "1",
              "--alpha", "0.6", "--retain-gap", "-2"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t_pre = run("launch/precompute.py", [*ds, "--teacher", args.teacher, "--out", str(tmp / "cache"),
                                             "--rows", str(args.steps * args.global_batch)], args.nproc)
        t_cached = run("launch/distill.py", [*ds, *common, "--cache", str(tmp / "cache"), "--out",
                                             str(tmp / "cached")], args.nproc)
        t_online = run("launch/distill.py", [*ds, *common, "--online", "--out", str(tmp / "online")], args.nproc)
        cached, online = tokens_per_s(tmp / "cached"), tokens_per_s(tmp / "online")
    sweep_online, sweep_cached = 4 * t_online, t_pre + 4 * t_cached
    print(f"training tokens/s: cached {cached:,.0f}, online {online:,.0f} -> cached/online {cached / online:.2f}x")
    print(f"wall per run: precompute {t_pre:.0f} s, cached distill {t_cached:.0f} s, online distill {t_online:.0f} s")
    print(f"alpha sweep of 4 students: online {sweep_online:.0f} s, cached {sweep_cached:.0f} s "
          f"(one precompute + 4 runs) -> {sweep_online / sweep_cached:.2f}x")
    print(json.dumps({"cached_over_online": round(cached / online, 3), "cached_tokens_per_s": round(cached),
                      "online_tokens_per_s": round(online), "precompute_s": round(t_pre, 1),
                      "cached_run_s": round(t_cached, 1), "online_run_s": round(t_online, 1),
                      "sweep4_online_s": round(sweep_online, 1), "sweep4_cached_s": round(sweep_cached, 1),
                      "sweep4_ratio": round(sweep_online / sweep_cached, 3), "steps": args.steps,
                      "global_batch": args.global_batch, "nproc": args.nproc}))


if __name__ == "__main__":
    main()
