"""Starting a job: distill/local_launch.py (UNDO_LAUNCHER=local) against the `deepspeed` launcher, in one run.

    .venv/bin/python bench/launcher.py [--reps 5] [--nproc 2]

Each job is what every stage does before its first step and nothing more: its ranks import torch and
DeepSpeed, join the process group (`deepspeed.init_distributed`) and meet at a barrier. The two launchers
take turns, job by job, so that a change in the machine's load falls on both. Prints each job's wall time,
the median per launcher, and last one JSON object with `local_over_deepspeed` (the median local job's time
over the median deepspeed job's; below 1 = the local launcher starts a job sooner) and the seconds saved
per job.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import statistics
import subprocess
import time

from distill.launcher import LAUNCHERS, REPO, deepspeed_command, stage_env


def rank_job() -> None:
    """One rank of a benchmark job (this file run by a launcher with --rank-job)."""
    import deepspeed
    import torch.distributed as dist

    deepspeed.init_distributed()
    dist.barrier()
    dist.destroy_process_group()


def time_job(launcher: str, nproc: int) -> float:
    cmd = deepspeed_command("bench/launcher.py", ["--rank-job"], nproc, launcher)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=stage_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"a {launcher} job failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="jobs per launcher")
    p.add_argument("--nproc", type=int, default=2, help="ranks per job")
    a = p.parse_args()
    if a.reps < 1 or a.nproc < 1:
        p.error("--reps and --nproc must be at least 1")
    time_job("local", a.nproc)  # warm the file cache and any one-time build, timed by neither side
    times = {name: [] for name in LAUNCHERS}
    for rep in range(a.reps):
        for name in (LAUNCHERS if rep % 2 == 0 else LAUNCHERS[::-1]):
            times[name].append(time_job(name, a.nproc))
            print(f"{name:9s} job {rep + 1}: {times[name][-1]:.2f} s", flush=True)
    median = {name: statistics.median(t) for name, t in times.items()}
    for name in LAUNCHERS:
        print(f"{name:9s} median {median[name]:.2f} s over {a.reps} jobs of {a.nproc} ranks")
    print(json.dumps({"local_over_deepspeed": round(median["local"] / median["deepspeed"], 3),
                      "seconds_saved_per_job": round(median["deepspeed"] - median["local"], 2),
                      "median_s": {k: round(v, 2) for k, v in median.items()}, "reps": a.reps, "nproc": a.nproc}))


if __name__ == "__main__":
    if "--rank-job" in sys.argv:
        rank_job()
    else:
        main()
