"""`launch/distill.py`: online distillation into a perturbed student on 2 ZeRO-3 ranks."""

import json
import re
import subprocess
import sys

import pytest
import torch
from launch_helpers import check, run_deepspeed, run_python, save_tiny_model, sgd_updates
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from distill.cache.shardfile import ShardFile
from distill.launcher import REPO, stage_env
from distill.noise import shrink_and_perturb
from unlearn.tasks.tokenizer import build_char_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    # A softcap that bites (|z| up to ~0.9 become up to ~0.7): a head that forgot it computes other gradients.
    return save_tiny_model(tmp_path_factory.mktemp("models") / "teacher", softcap=1.0)


def distill_args(teacher, out, extra=(), targets=("--online",)):
    return ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--teacher", str(teacher), "--out", str(out),
            *targets, "--steps", "6", "--global-batch", "8", "--micro-batch", "4", "--seq-len", "32",
            "--eval-every", "3",
            "--eval-per-format", "1", "--final-eval-per-format", "1", "--save-every", "0", *extra]


def test_distill_writes_a_student_and_its_compute(teacher, tmp_path):
    out = tmp_path / "student"
    # A negative gap can never be met: the run goes to its step budget.
    check(run_deepspeed("launch/distill.py", distill_args(teacher, out, ["--alpha", "0.5", "--retain-gap", "-2"]),
                        nproc=2, launcher="deepspeed", timeout=600))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_criterion"] is False and summary["steps"] == 6
    assert summary["tokens"] == 6 * 8 * 32  # packed rows: every position counts
    assert summary["flops"] > 6 * summary["tokens"] * 1e6 * 0.9
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kd = [r["loss/kd"] for r in rows if "loss/kd" in r]
    assert len(kd) == 6 and all(v >= 0 for v in kd)
    student, start = load_file(out / "model.safetensors"), load_file(teacher / "model.safetensors")
    assert not torch.equal(student["model.embed_tokens.weight"], start["model.embed_tokens.weight"])


@pytest.mark.parametrize("budget", [6, 3], ids=["before-the-budget", "at-the-budget"])
def test_stop_criterion_ends_the_run_when_met(teacher, tmp_path, budget):
    out = tmp_path / "student"
    # A gap of 2 is met at the first evaluation, step 3 (accuracies lie in [0, 1]); with a budget of 3 that is
    # the last step, where the criterion is still checked: the run met it, it did not run out of steps.
    check(run_deepspeed("launch/distill.py", distill_args(teacher, out, ["--retain-gap", "2", "--steps", str(budget)]),
                        nproc=2, timeout=600))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_criterion"] is True and summary["steps"] == 3
    assert summary["tokens"] == 3 * 8 * 32


def test_missing_demo_teacher_names_the_commands_that_make_it(tmp_path):
    env = stage_env()
    env.pop("RANK", None)
    result = subprocess.run([sys.executable, str(REPO / "launch/distill.py"), "--ds_config",
                             str(REPO / "ds_configs/zero3.json")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert "demo teacher runs/unlearned-maxent does not exist yet" in result.stderr
    assert "launch/unlearn.py" in result.stderr


@pytest.fixture(scope="module")
def cache(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("caches") / "cache"
    args = ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--teacher", str(teacher), "--out", str(out),
            "--rows", "96", "--seq-len", "32", "--top-k", "8"]
    # One rank: 2-rank precompute is covered by tests/distill/cache. Here, after the rest of the suite, a
    # 2-rank precompute of this single-shard cache has had its shard-less rank abort at exit ("terminate
    # called without an active exception") after a complete cache was written: an open problem.
    check(run_deepspeed("launch/precompute.py", args, nproc=1, timeout=600))
    return out


def test_distill_from_the_cache(teacher, cache, tmp_path):
    out = tmp_path / "student"
    args = distill_args(teacher, out, ["--alpha", "0.5", "--retain-gap", "-2"], targets=("--cache", str(cache)))
    check(run_deepspeed("launch/distill.py", args, nproc=2, timeout=600))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["targets"].startswith("cache:") and summary["steps"] == 6
    assert summary["tokens"] == 6 * 8 * 32
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kd = [r["loss/kd"] for r in rows if "loss/kd" in r]
    assert len(kd) == 6 and all(v >= -1e-5 for v in kd)


def test_a_cache_from_another_teacher_is_refused_before_training(cache, tmp_path):
    other = save_tiny_model(tmp_path / "other-teacher", seed=1)
    out = tmp_path / "student"
    result = run_python("launch/distill.py", distill_args(other, out, targets=("--cache", str(cache))))
    assert result.returncode == 2 and "teacher mismatch" in result.stderr, result.stderr[-2000:]
    assert not out.exists()


def test_a_damaged_cache_is_refused_before_the_first_step(teacher, cache, tmp_path):
    """One flipped byte in the last shard: the ranks' shared sha256 check refuses the cache on every rank
    before a step is taken, naming the shard, and nothing is written."""
    damaged = tmp_path / "cache"
    damaged.mkdir()
    for f in cache.iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    last = sorted(damaged.glob("shard-*.bin"))[-1]
    data = bytearray(last.read_bytes())
    data[-100] ^= 0x01
    last.write_bytes(bytes(data))
    out = tmp_path / "student"
    result = run_deepspeed("launch/distill.py", distill_args(teacher, out, targets=("--cache", str(damaged))),
                           nproc=2, timeout=600)
    assert result.returncode != 0
    assert f"differ from the manifest's sha256 (corrupted or replaced): {last.name}" in result.stderr, \
        result.stderr[-2000:]
    assert not out.exists()


def test_damage_met_while_training_is_one_line_of_its_own(teacher, cache, tmp_path):
    """With --no-verify-cache a damaged chunk is met inside a step, below the progress bar: the error still
    stands on a line of its own, naming the shard and the record, and the run stops with exit code 2."""
    damaged = tmp_path / "cache"
    damaged.mkdir()
    for f in cache.iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    shard = sorted(damaged.glob("shard-*.bin"))[0]
    opened = ShardFile.open(damaged, shard, shard.stat().st_size)
    data = bytearray(shard.read_bytes())
    for chunk in opened.header["arrays"]["chunks"]:  # one flipped byte in every chunk's value codes
        offset, size, *_ = chunk["codes"]
        data[opened.payload_start + offset + size // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    out = tmp_path / "student"
    result = run_deepspeed("launch/distill.py", distill_args(teacher, out, ["--no-verify-cache"],
                                                             targets=("--cache", str(damaged))), nproc=2, timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    # A terminal starts a line at "\n" and redraws it at "\r": each rank's error must start such a piece
    # (rank 0's progress bar is drawn on the same stream, without a newline, while a step runs).
    errors = [piece for piece in re.split(r"[\r\n]", result.stderr) if "error" in piece and "logit cache" in piece]
    assert errors and all(e.startswith("error") for e in errors), result.stderr[-3000:]
    assert all(f"shard {shard.name}, record" in e and "damaged zstd frame" in e for e in errors)


def test_student_with_a_padded_vocabulary(teacher, tmp_path):
    """Same tokenizer, 96 embedding rows instead of 77 (as Gemma-2 256,000 vs Gemma-3 262,144)."""
    from distill.models import preset_config

    tok = build_char_tokenizer()
    student_dir = tmp_path / "padded"
    config = preset_config("gemma2-tiny", tok)
    config.vocab_size = 96
    config.save_pretrained(student_dir)
    tok.save_pretrained(student_dir)
    out = tmp_path / "student"
    args = distill_args(teacher, out, ["--student", str(student_dir), "--steps", "3", "--retain-gap", "-2"])
    check(run_deepspeed("launch/distill.py", args, nproc=2, timeout=600))
    weights = load_file(out / "model.safetensors")
    assert weights["model.embed_tokens.weight"].shape == (96, 128)
    assert json.loads((out / "summary.json").read_text())["steps"] == 3


def test_a_padded_teacher_distils_from_its_cache(tmp_path):
    """A random teacher with 96 output rows for 77 tokenizer ids puts much of its mass, and top-k ids, in
    the padding rows. The cache holds its distribution over the tokenizer's ids, as the online loss and the
    student's head see it, so distillation from it runs; a cache whose ids may reach past the tokenizer
    is refused before anything is written."""
    teacher = save_tiny_model(tmp_path / "padded-teacher", seed=2, vocab=96)
    cache = tmp_path / "cache"
    check(run_deepspeed("launch/precompute.py", ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--teacher",
                                                 str(teacher), "--out", str(cache), "--rows", "48", "--seq-len", "32",
                                                 "--top-k", "8"], nproc=1, timeout=600))
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["vocab_size"] == 77
    out = tmp_path / "student"
    args = distill_args(teacher, out, ["--steps", "2", "--retain-gap", "-2", "--eval-every", "0"],
                        targets=("--cache", str(cache)))
    check(run_deepspeed("launch/distill.py", args, nproc=2, timeout=600))
    assert json.loads((out / "summary.json").read_text())["steps"] == 2

    manifest["vocab_size"] = 96  # as a cache over the whole output matrix would say
    (cache / "manifest.json").write_text(json.dumps(manifest))
    refused = tmp_path / "refused"
    result = run_python("launch/distill.py", distill_args(teacher, refused, targets=("--cache", str(cache))))
    assert result.returncode == 2 and "vocab mismatch" in result.stderr, result.stderr[-2000:]
    assert not refused.exists()


def test_killed_cache_run_resumes_to_the_same_weights(teacher, cache, tmp_path):
    """Kill after a checkpoint, rerun: the cache stream resumes at the checkpoint's position."""
    import os
    import signal
    import time

    from distill.launcher import deepspeed_command

    def args(out):
        return distill_args(teacher, out, ["--alpha", "0.5", "--retain-gap", "-2", "--steps", "12",
                                           "--save-every", "4", "--eval-every", "0"], targets=("--cache", str(cache)))

    reference = tmp_path / "reference"
    check(run_deepspeed("launch/distill.py", args(reference), nproc=2, timeout=600))
    out = tmp_path / "killed"
    proc = subprocess.Popen(deepspeed_command("launch/distill.py", args(out), 2), env=stage_env(), cwd=REPO,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest, deadline = out / "checkpoints" / "latest", time.time() + 300
    while not (latest.exists() and latest.read_text().strip() >= "step-00000004"):
        assert proc.poll() is None and time.time() < deadline, "run ended before its step-4 checkpoint"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"
    check(run_deepspeed("launch/distill.py", args(out), nproc=2, timeout=600))
    # Bit for bit: weights, Adam's moments and the cache position are restored exactly and the resumed
    # steps run the same kernels in the same order.
    a, b = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_student_with_another_tokenizer_is_refused(teacher, tmp_path):
    other = build_char_tokenizer()
    other.add_tokens(["<extra>"])
    student_dir = tmp_path / "other-tok"
    other.save_pretrained(student_dir)
    out = tmp_path / "student"
    result = run_python("launch/distill.py", distill_args(teacher, out, ["--student", str(student_dir)]))
    assert result.returncode == 2 and "tokenizer mismatch" in result.stderr, result.stderr[-2000:]
    assert not out.exists()


@pytest.mark.parametrize("targets", ["online", "cache"])
def test_fused_head_matches_the_loss_on_materialised_logits(teacher, cache, tmp_path, targets):
    """The fused-linear head (default) and the model's materialised logits give the same losses and the same
    gradients: 4 SGD steps from the same perturbed student, compared step by step and by their updates.
    Online at temperature 2 and with the teacher's softcap of 1, so dropping either in the fused path fails."""
    flag = ("--online", "--temperature", "2") if targets == "online" else ("--cache", str(cache))
    outs = {}
    for head in ("fused", "logits"):
        outs[head] = tmp_path / head
        args = distill_args(teacher, outs[head], ["--alpha", "0.5", "--retain-gap", "-2", "--steps", "4",
                                                  "--eval-every", "0", "--optimizer", "sgd", "--lr", "0.5",
                                                  "--schedule", "constant", "--warmup", "0", "--loss-head", head],
                            targets=flag)
        check(run_deepspeed("launch/distill.py", args, nproc=2, timeout=600))
    kd = {h: [json.loads(x)["loss/kd"] for x in (outs[h] / "metrics.jsonl").read_text().splitlines()
              if "loss/kd" in x] for h in ("fused", "logits")}
    # Step 1 starts from the same weights: the losses differ by summation order alone (~1e-7 relative);
    # later steps start from weights that differ by the bound below, far under 1e-5 of the loss.
    assert len(kd["fused"]) == 4 and kd["fused"] == pytest.approx(kd["logits"], rel=1e-5, abs=1e-7)
    a, b = load_file(outs["fused"] / "model.safetensors"), load_file(outs["logits"] / "model.safetensors")
    # The perturbed student both runs started from: the noise does not depend on the world size
    # (tests/distill/test_noise_zero3.py), so the same draw in this process gives it bit for bit.
    student = AutoModelForCausalLM.from_pretrained(teacher, attn_implementation="eager")
    shrink_and_perturb(student, alpha=0.5, beta=0.1, seed=0)
    start = {n: p.detach() for n, p in student.named_parameters()}
    assert set(a) == set(b) == set(start)  # the export holds the causal LM alone, not the loss head
    assert any((b[n] - start[n]).abs().max() > 1e-4 for n in b)  # the runs trained: there is an update to compare
    for name, (diff, bound) in sgd_updates(start, a, b, steps=4).items():
        assert diff <= bound, (name, diff, bound)


def test_online_on_the_rows_of_a_cache_sees_the_cached_run_s_data(teacher, tmp_path):
    """--online --rows-from-cache reads the cache's rows in the cached run's order: with a cache that keeps
    the whole vocabulary (top-k = vocab size), both runs' losses agree to the cache's rounding."""
    full = tmp_path / "full-cache"
    vocab = len(build_char_tokenizer())
    check(run_deepspeed("launch/precompute.py", ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--teacher",
                                                 str(teacher), "--out", str(full), "--rows", "96", "--seq-len", "32",
                                                 "--top-k", str(vocab)], nproc=1, timeout=600))
    runs = {"cache": ("--cache", str(full)), "online-rows": ("--online", "--rows-from-cache", str(full))}
    kd = {}
    for name, flag in runs.items():
        out = tmp_path / name
        args = distill_args(teacher, out, ["--alpha", "0.5", "--retain-gap", "-2", "--steps", "4", "--eval-every",
                                           "0"], targets=flag)
        check(run_deepspeed("launch/distill.py", args, nproc=2, timeout=600))
        kd[name] = [json.loads(x)["loss/kd"] for x in (out / "metrics.jsonl").read_text().splitlines()
                    if "loss/kd" in x]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["flops"] > 0 and summary["steps"] == 4
    assert json.loads((tmp_path / "online-rows" / "summary.json").read_text())["targets"].startswith("online:rows-of:")
    assert len(kd["cache"]) == 4
    # Full-vocabulary targets differ from dense ones by the cache's rounding only (~5e-5 nats per token;
    # measured: at most 1.4e-4 over 4 steps). Other rows move the losses far more: a plain --online run
    # (its own rows) differed from the cached run by 7e-4 to 3.5e-3 at these steps.
    assert kd["online-rows"] == pytest.approx(kd["cache"], rel=0, abs=3e-4)


def test_rows_from_cache_needs_online(teacher, cache, tmp_path):
    result = run_python("launch/distill.py", distill_args(teacher, tmp_path / "s", targets=(
        "--cache", str(cache), "--rows-from-cache", str(cache))))
    assert result.returncode == 2 and "--rows-from-cache goes with --online" in result.stderr
