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


def save_tiny_model(path, seed: int = 0, softcap: float | None = None, vocab: int | None = None):
    """A random gemma2-tiny with weights and tokenizer, as launch/pretrain.py would leave a model; `softcap`
    replaces Gemma-2's final logit softcap of 30 (which leaves this model's logits, |z| < 1, all but unchanged);
    `vocab` pads the output matrix past the tokenizer's 77 ids (as Gemma-3's 262,144 rows)."""
    import torch

    from distill.models import build_model, preset_config
    from unlearn.tasks.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    torch.manual_seed(seed)
    if vocab is not None:
        config = preset_config("gemma2-tiny", tok)
        config.vocab_size = vocab
        config.save_pretrained(path)
        tok.save_pretrained(path)
    model = build_model(str(path) if vocab is not None else "gemma2-tiny", tok)
    if softcap is not None:
        model.config.final_logit_softcapping = softcap
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def sgd_updates(start: dict, a: dict, b: dict, steps: int) -> dict[str, tuple[float, float]]:
    """Per tensor, (||(a - start) - (b - start)||, the bound it must meet) for two SGD runs of `steps` steps
    from the same weights `start`, claimed to compute the same loss by different code paths.

    Why the bound holds: SGD's update is -lr x gradient, so the two updates differ by lr x (the gradient
    difference). Computing the same loss, the gradients differ only by float32 rounding in their sums
    (the order of chunks, ranks, accumulation steps): a relative error of order sqrt(n) x 2^-24, about 1e-5
    for the n <= 10^4 terms of a gradient element in these tiny runs; REL = 1e-4 leaves a factor 10. (Later
    steps also start from weights that differ by that much; for these few small steps the gradient moves
    with them by far less.) Each stored weight is rounded to float32 after every step, half an ulp per step
    and run: hence the second term, steps x ulp(start) in norm. A gradient that differs in kind (a missed
    softcap or temperature) moves the updates by percents: 100 to 1000 times the bound, where measured."""
    import torch

    rel = 1e-4
    out = {}
    for name, w0 in start.items():
        da, db = a[name] - w0, b[name] - w0
        ulp = torch.nextafter(w0.abs(), torch.full_like(w0, float("inf"))) - w0.abs()
        out[name] = ((da - db).norm().item(), rel * db.norm().item() + steps * ulp.norm().item())
    return out


def run_deepspeed(script: str, args: list[str], nproc: int, launcher: str | None = None,
                  **kw) -> subprocess.CompletedProcess:
    """`script args` as a job of `nproc` ranks: under the suite's launcher (tests/conftest.py: the local one),
    or `launcher="deepspeed"` for the documented `deepspeed` command."""
    return subprocess.run(deepspeed_command(script, args, nproc, launcher), env=stage_env(), cwd=REPO,
                          capture_output=True, text=True, **kw)


def run_python_batch(invocations: list[tuple[str, list[str]]]) -> list[subprocess.CompletedProcess]:
    """Each (script, args) as `run_python` would run it, all in one process (tests/launch/cli_batch.py): for a
    table of invocations that stop while parsing their flags, whose cost is mostly starting Python."""
    driver = REPO / "tests" / "launch" / "cli_batch.py"
    done = subprocess.run([sys.executable, str(driver)], input=json.dumps([[str(REPO / s), a] for s, a in invocations]),
                          env=_python_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [subprocess.CompletedProcess([s, *a], r["returncode"], r["stdout"], r["stderr"])
            for (s, a), r in zip(invocations, json.loads(done.stdout.splitlines()[-1]), strict=True)]


def _python_env() -> dict:
    """A stage's environment without a RANK: a plain `python SCRIPT` is one process, not a rank of a job."""
    env = stage_env()
    env.pop("RANK", None)
    return env


def run_python(script: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], env=_python_env(), cwd=REPO,
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

