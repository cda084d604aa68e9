"""Helpers for tests that run the entry points as a user would: as processes, under `deepspeed`.

A plain module, not a conftest: two conftest.py files without packages would clash by name."""

import json
import subprocess
import sys

import pytest

from distill.launcher import REPO, deepspeed_command, stage_env


def tiny_run_args(out, micro: int, steps: int = 30, extra=()) -> list[str]:
    """A pretraining run small enough for the test suite (a few seconds of training)."""
    return ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--out", str(out), "--model", "gemma2-tiny",
            "--steps", str(steps), "--global-batch", "8", "--micro-batch", str(micro), "--seq-len", "32",
            "--lr", "3e-3", "--save-every", "5", "--eval-every", "10", "--eval-per-format", "1",
            "--final-eval-per-format", "2", *extra]


def save_tiny_model(path, seed: int = 0):
    """A random gemma2-tiny with weights and tokenizer, as launch/pretrain.py would leave a model."""
    import torch

    from distill.models import build_model
    from unlearn.tasks.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    torch.manual_seed(seed)
    build_model("gemma2-tiny", tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def run_deepspeed(script: str, args: list[str], nproc: int, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(deepspeed_command(script, args, nproc), env=stage_env(), cwd=REPO,
                          capture_output=True, text=True, **kw)


def run_python(script: str, args: list[str]) -> subprocess.CompletedProcess:
    env = stage_env()
    env.pop("RANK", None)
    return subprocess.run([sys.executable, str(REPO / script), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def losses(out) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss/ce" in r]
    steps = [r["step"] for r in train]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {r["step"]: r["loss/ce"] for r in train}


def check(result: subprocess.CompletedProcess) -> None:
    if result.returncode != 0:
        pytest.fail(f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}")

