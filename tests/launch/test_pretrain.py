"""End-to-end behaviour of `launch/pretrain.py` under the deepspeed launcher (ZeRO-3, CPU ranks)."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from launch_helpers import check, losses, run_deepspeed, run_python, save_tiny_model, sgd_updates, tiny_run_args
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig

from distill.launcher import REPO, deepspeed_command, stage_env
from unlearn.tasks.tokenizer import build_char_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """The reference: 2 ranks, micro-batch 4, no accumulation, run uninterrupted, under the `deepspeed` launcher
    as the README runs it."""
    out = tmp_path_factory.mktemp("runs") / "two"
    check(run_deepspeed("launch/pretrain.py", tiny_run_args(out, micro=4), nproc=2, launcher="deepspeed",
                        timeout=600))
    return out


def test_one_rank_with_accumulation_matches_two_ranks(tmp_path):
    """Same effective batch, same rows: 1 rank accumulating 2 micro-batches computes the loss and gradient of
    2 ranks with 1 each. Compared by SGD runs from one saved init (see sgd_updates for the bound); the
    losses of step 1 differ by summation order only, later ones also by the weights' difference."""
    start = save_tiny_model(tmp_path / "init")
    outs = {n: tmp_path / f"ranks-{n}" for n in (1, 2)}
    for n, out in outs.items():
        args = tiny_run_args(out, micro=4, steps=10, extra=["--optimizer", "sgd", "--lr", "0.5", "--schedule",
                                                             "constant", "--warmup", "0", "--eval-every", "0"])
        args[args.index("gemma2-tiny")] = str(start)
        check(run_deepspeed("launch/pretrain.py", args, nproc=n, timeout=600))
    one, two = losses(outs[1]), losses(outs[2])
    assert sorted(one) == sorted(two) == list(range(1, 11))
    assert [one[s] for s in one] == pytest.approx([two[s] for s in one], rel=1e-5)
    assert one[10] < one[1] - 0.1  # it trains: there is an update to compare
    w0 = load_file(start / "model.safetensors")
    a, b = load_file(outs[1] / "model.safetensors"), load_file(outs[2] / "model.safetensors")
    for name, (diff, bound) in sgd_updates(w0, a, b, steps=10).items():
        assert diff <= bound, (name, diff, bound)


def test_activation_checkpointing_gives_the_same_losses(two_rank_run, tmp_path):
    out = tmp_path / "ckpt"
    args = tiny_run_args(out, micro=4, extra=["--activation-checkpointing"])
    check(run_deepspeed("launch/pretrain.py", args, nproc=2, timeout=600))
    recomputed, stored = losses(out), losses(two_rank_run)
    assert sorted(recomputed) == list(range(1, 31))
    # Bit for bit: the backward recomputes each layer's forward with the same kernels on the same inputs,
    # and every other operation runs in the same order (CPU kernels are deterministic).
    for step in range(1, 31):
        assert recomputed[step] == stored[step], (step, recomputed[step], stored[step])


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
    assert reference[30] < reference[1] - 0.5  # it learns
    assert sorted(resumed) == list(range(1, 31))
    # Bit for bit: the checkpoint restores weights, Adam's moments, the data position and the RNG exactly,
    # and the resumed steps run the same kernels in the same order as the uninterrupted ones.
    for step in range(1, 31):
        assert resumed[step] == reference[step], (step, resumed[step], reference[step])


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


def test_a_deepspeed_csv_monitor_gets_every_step_and_evaluation(tmp_path):
    """With csv_monitor enabled in the DeepSpeed config, each metric of metrics.jsonl is also a CSV of
    (step, value) under its own name (DeepSpeed's file naming: '/' becomes '_')."""
    config = json.loads((REPO / "ds_configs/zero3.json").read_text())
    config["csv_monitor"] = {"enabled": True, "output_path": str(tmp_path / "monitor"), "job_name": "run"}
    ds_config = tmp_path / "monitored.json"
    ds_config.write_text(json.dumps(config))
    out = tmp_path / "out"
    args = tiny_run_args(out, micro=4, steps=4, extra=["--eval-every", "2", "--eval-per-format", "1",
                                                       "--final-eval-per-format", "1", "--ds_config", str(ds_config)])
    check(run_python("launch/pretrain.py", args))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    def csv_of(name):
        lines = (tmp_path / "monitor" / "run" / f"{name.replace('/', '_')}.csv").read_text().splitlines()
        return [(int(step), float(value)) for step, value in (line.split(",") for line in lines[1:])]

    for name in ("loss", "loss/ce", "lr", "eval/retain_accuracy"):
        logged = [(r["step"], float(r[name])) for r in rows if r.get(name) is not None]
        assert logged and csv_of(name) == logged, name
