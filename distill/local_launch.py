"""Start one machine's ranks of a job directly: what `deepspeed --num_gpus N` does on one machine, less its cost.

Each rank gets the environment and arguments the DeepSpeed launcher gives it (RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_SIZE, CROSS_RANK, CROSS_SIZE, MASTER_ADDR, MASTER_PORT; `python -u SCRIPT --local_rank=R ARGS`), so a
stage cannot tell the two apart. Why a second launcher: DeepSpeed's runs two Python layers that each import
deepspeed (and torch) before the ranks start, and then polls its ranks once a second; on 2 CPU cores that is
about 5 s per job, minutes over a test suite or a pipeline of many short stages. This one imports nothing
heavy and waits on its ranks. Like DeepSpeed's, it stops every rank when one fails (a rank left waiting in a
collective would hang) and passes SIGINT / SIGTERM on to them.

Usage: python distill/local_launch.py --nproc N --master_port PORT SCRIPT [ARGS...]
(`distill.launcher.deepspeed_command` writes this command when UNDO_LAUNCHER=local.)"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

GRACE_S = 30  # how long a stopped rank gets to exit after SIGTERM before SIGKILL


def rank_env(base: dict, rank: int, nproc: int, port: int) -> dict:
    env = dict(base)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_SIZE=str(nproc),
               CROSS_RANK="0", CROSS_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return env


def stop(procs: list[subprocess.Popen], sig: int = signal.SIGTERM) -> None:
    """Signal every rank still running and each process it started, then kill what outlives the grace."""
    import psutil  # a DeepSpeed dependency; imported here, where it is needed, to keep the start cheap

    tree = []
    for p in procs:
        if p.poll() is None:
            try:
                parent = psutil.Process(p.pid)
                tree += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
    for proc in tree:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=GRACE_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def exit_code(status: int) -> int:
    """A rank's wait status as a shell reports it: its exit code, or 128 + the signal that killed it."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def wait_all(procs: list[subprocess.Popen]) -> int:
    """Wait for every rank; at the first that fails, stop the others and return its exit code."""
    rank_of = {p.pid: rank for rank, p in enumerate(procs)}
    while any(p.returncode is None for p in procs):
        pid, status = os.wait()  # blocks until a rank exits: no polling delay
        if pid not in rank_of:
            continue
        proc = procs[rank_of[pid]]
        proc.returncode = exit_code(status)  # reaped here, so Popen must not wait on it again
        if proc.returncode != 0:
            stop(procs)
            print(f"[local_launch] rank {rank_of[pid]} exited with code {proc.returncode}; stopped the others",
                  file=sys.stderr, flush=True)
            return proc.returncode
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, required=True, help="ranks on this machine")
    p.add_argument("--master_port", type=int, required=True, help="the rendezvous port on 127.0.0.1")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.nproc < 1:
        p.error(f"--nproc must be at least 1, got {a.nproc}")
    procs: list[subprocess.Popen] = []

    def forward(signum, _frame):
        stop(procs, signum)
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for rank in range(a.nproc):
        cmd = [sys.executable, "-u", a.script, f"--local_rank={rank}", *a.args]
        procs.append(subprocess.Popen(cmd, env=rank_env(os.environ, rank, a.nproc, a.master_port)))
    return wait_all(procs)


if __name__ == "__main__":
    sys.exit(main())
