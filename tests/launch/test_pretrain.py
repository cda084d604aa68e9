"""End-to-end behaviour of `launch/pretrain.py` under the deepspeed launcher (ZeRO-3, CPU ranks)."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from launch_helpers import check, losses, run_deepspeed, run_python, tiny_run_args
from transformers import AutoModelForCausalLM, LlamaConfig

from distill.launcher import REPO, deepspeed_command, stage_env
from unlearn.tasks.tokenizer import build_char_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """The reference: 2 ranks, micro-batch 4, no accumulation, run uninterrupted."""
    out = tmp_path_factory.mktemp("runs") / "two"
    check(run_deepspeed("launch/pretrain.py", tiny_run_args(out, micro=4), nproc=2, timeout=600))
    return out


def test_one_rank_with_accumulation_matches_two_ranks(two_rank_run, tmp_path):
    out = tmp_path / "one"
    check(run_deepspeed("launch/pretrain.py", tiny_run_args(out, micro=4), nproc=1, timeout=600))
    one, two = losses(out), losses(two_rank_run)
    assert sorted(one) == list(range(1, 31))
    for step in range(1, 21):
        assert abs(one[step] - two[step]) < 1e-4, (step, one[step], two[step])
    assert one[30] < one[1] - 0.5  # it learns


def test_activation_checkpointing_gives_the_same_losses(two_rank_run, tmp_path):
    out = tmp_path / "ckpt"
    args = tiny_run_args(out, micro=4, extra=["--activation-checkpointing"])
    check(run_deepspeed("launch/pretrain.py", args, nproc=2, timeout=600))
    recomputed, stored = losses(out), losses(two_rank_run)
    assert sorted(recomputed) == list(range(1, 31))
    for step in range(1, 31):
        assert abs(recomputed[step] - stored[step]) < 1e-5, (step, recomputed[step], stored[step])


def test_killed_run_resumes_with_identical_losses(two_rank_run, tmp_path):
    out = tmp_path / "killed"
    cmd = deepspeed_command("launch/pretrain.py", tiny_run_args(out, micro=4), 2)
    proc = subprocess.Popen(cmd, env=stage_env(), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not (latest.exists() and latest.read_text().strip() >= "step-00000010"):
        assert proc.poll() is None and time.time() < deadline, "run ended before its step-10 checkpoint"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"
    check(run_deepspeed("launch/pretrain.py", tiny_run_args(out, micro=4), nproc=2, timeout=600))
    resumed, reference = losses(out), losses(two_rank_run)
    assert sorted(resumed) == list(range(1, 31))
    for step in range(1, 31):
        assert abs(resumed[step] - reference[step]) <= 1e-6, (step, resumed[step], reference[step])


def test_export_is_a_complete_hf_model_that_scores_like_the_trained_one(two_rank_run, tmp_path):
    out = two_rank_run
    for name in ("config.json", "model.safetensors", "tokenizer.json", "summary.json", "run_config.json"):
        assert (out / name).is_file(), name
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True, attn_implementation="eager")
    assert model.config.model_type == "gemma2"
    assert all(p.numel() > 0 for p in model.parameters())  # gathered, not empty ZeRO-3 partitions
    result = run_python("launch/evaluate.py", ["--model", str(out), "--out", str(tmp_path / "e.json"),
                                               "--per-format", "2"])
    check(result)
    scored = json.loads((tmp_path / "e.json").read_text())
    for key in ("accuracy", "equation_accuracy", "word_accuracy", "retain_accuracy", "forget_accuracy"):
        assert key in scored
    assert all(0.0 <= v <= 1.0 for v in scored["accuracy"].values())
    trained = json.loads((out / "summary.json").read_text())["evaluation"]
    assert scored["accuracy"] == trained["accuracy"]  # same problems, same weights, same answers


def test_finished_run_is_not_overwritten(two_rank_run):
    result = run_python("launch/pretrain.py", tiny_run_args(two_rank_run, micro=4))
    assert result.returncode == 2
    assert "already holds a finished run" in result.stderr


def test_llama_architecture_trains_under_zero3(tmp_path):
    tok = build_char_tokenizer()
    model_dir = tmp_path / "llama"
    LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                eos_token_id=2).save_pretrained(model_dir)
    out = tmp_path / "out"
    args = tiny_run_args(out, micro=4, steps=4)
    args[args.index("gemma2-tiny")] = str(model_dir)
    check(run_deepspeed("launch/pretrain.py", args, nproc=2, timeout=600))
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not torch.isnan(next(model.parameters())).any()


@pytest.mark.parametrize("config", ["zero2.json", "zero3_offload.json"])
def test_other_shipped_configs_train_unchanged(config, tmp_path):
    out = tmp_path / "out"
    args = tiny_run_args(out, micro=4, steps=3)
    args[args.index(str(REPO / "ds_configs/zero3.json"))] = str(REPO / "ds_configs" / config)
    check(run_deepspeed("launch/pretrain.py", args, nproc=2, timeout=900))
    rows = losses(out)
    assert sorted(rows) == [1, 2, 3] and all(v == v for v in rows.values())  # no NaN
    assert json.loads((out / "run_config.json").read_text())["deepspeed"]["train_batch_size"] == 8
