"""Start stages under the `deepspeed` launcher from Python (the demo pipeline and the tests)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from distill.dist import free_port, release_shm

REPO = Path(__file__).resolve().parents[1]


def deepspeed_bin() -> str:
    """The launcher installed beside this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "deepspeed"
    found = str(here) if here.exists() else shutil.which("deepspeed")
    if not found:
        raise FileNotFoundError("the `deepspeed` launcher is not installed (pip install deepspeed)")
    return found


LAUNCHERS = ("deepspeed", "local")


def launcher_choice(launcher: str | None = None) -> str:
    """`launcher`, else UNDO_LAUNCHER, else "deepspeed": the documented `deepspeed` launcher, or "local",
    `distill/local_launch.py`, which starts one machine's ranks with the same environment about 5 s sooner."""
    choice = launcher or os.environ.get("UNDO_LAUNCHER") or "deepspeed"
    if choice not in LAUNCHERS:
        raise ValueError(f"UNDO_LAUNCHER={choice!r}: expected one of {', '.join(LAUNCHERS)}")
    return choice


def deepspeed_command(script: str, args: list[str], nproc: int, launcher: str | None = None) -> list[str]:
    """The command that runs `script args` as a job of `nproc` ranks on this machine, on a free rendezvous
    port (runs may overlap): `deepspeed --num_gpus N ...`, or the local launcher (`launcher_choice`)."""
    port = str(free_port())
    if launcher_choice(launcher) == "local":
        return [sys.executable, str(REPO / "distill" / "local_launch.py"), "--nproc", str(nproc),
                "--master_port", port, str(REPO / script), *args]
    return [deepspeed_bin(), "--num_gpus", str(nproc), "--master_port", port, str(REPO / script), *args]


def stage_env() -> dict:
    env = dict(os.environ)
    if not _has_cuda():
        env.setdefault("DS_ACCELERATOR", "cpu")
    return env


def _has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def release_job_shm(cmd: list[str]) -> None:
    """Free the /dev/shm buffers of a finished or killed job started with `deepspeed_command`."""
    release_shm("127.0.0.1", cmd[cmd.index("--master_port") + 1])


def run_stage(script: str, args: list[str], nproc: int, log: Path | None = None) -> None:
    """Run one stage to completion, its output on this terminal or appended to `log`; a failure raises
    with the command that failed (and the log's path)."""
    cmd = deepspeed_command(script, args, nproc)
    line = "$ " + " ".join(cmd)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log, "a") if log is not None else contextlib.nullcontext(sys.stdout) as out:
            print(line, file=out, flush=True)
            result = subprocess.run(cmd, env=stage_env(), cwd=REPO, stdout=None if log is None else out,
                                    stderr=None if log is None else subprocess.STDOUT)
    finally:
        release_job_shm(cmd)
    if result.returncode != 0:
        where = f" (its output: {log})" if log is not None else ""
        raise RuntimeError(f"stage {script} failed with exit code {result.returncode}{where}: {' '.join(cmd)}")
