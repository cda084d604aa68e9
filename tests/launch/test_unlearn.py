"""`launch/unlearn.py` under the deepspeed launcher: every method, 2 ZeRO-3 ranks, a few steps."""

import json

import pytest
import torch
from launch_helpers import check, run_deepspeed, run_python, save_tiny_model, sgd_updates
from safetensors.torch import load_file

from distill.launcher import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    """A tiny Gemma-2 with weights and tokenizer, as launch/pretrain.py would leave it."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "start")


def unlearn_args(model, out, method, extra=()):
    return ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--model", str(model), "--method", method,
            "--out", str(out), "--steps", "3", "--global-batch", "8", "--micro-batch", "4",
            "--final-eval-per-format", "1", "--save-every", "0", *extra]


# The fused head (as at a 256k vocabulary) for MaxEnt, NPO (two head passes and a reference under ZeRO-3),
# SAM (the same, twice per step: the engine's worst-case pass) and RepNoise (the head read from every layer);
# the model's logits (the testbed's default below 8192 tokens) for the others.
HEADS = {"graddiff": "auto", "maxent": "fused", "rmu": "auto", "npo": "fused", "simnpo": "auto", "sam": "fused",
         "repnoise": "fused"}


@pytest.mark.parametrize("method", list(HEADS))
def test_each_method_runs_on_two_zero3_ranks(start_model, tmp_path, method):
    out = tmp_path / method
    launcher = "deepspeed" if method == "graddiff" else None  # one method under the documented command
    check(run_deepspeed("launch/unlearn.py", unlearn_args(start_model, out, method, ["--loss-head", HEADS[method]]),
                        nproc=2, launcher=launcher, timeout=600))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and 0.0 <= summary["evaluation"]["forget_accuracy"] <= 1.0
    saved = json.loads((out / "run_config.json").read_text())
    assert saved["loss_head"] == ("fused" if HEADS[method] == "fused" else "logits")
    assert saved["hparams"] == summary["hparams"]  # the resolved configuration beside the model
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    before, after = load_file(start_model / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if method == "rmu":  # only the MLP down-projections of the default trainable layers 0, 1, 2
        assert changed == {f"model.layers.{i}.mlp.down_proj.weight" for i in range(3)}
    else:
        assert "model.embed_tokens.weight" in changed


def test_fused_unlearning_matches_the_logits(start_model, tmp_path):
    """GradDiff with the KL retain term (gradient ascent through row scales, the reference's logits
    projected a chunk at a time from its gathered ZeRO-3 matrix): the fused head and the materialised
    logits give the same losses and, after 3 SGD steps on 2 ranks, the same weights within the bound of
    `sgd_updates`."""
    outs = {}
    for head in ("fused", "logits"):
        outs[head] = tmp_path / head
        args = unlearn_args(start_model, outs[head], "graddiff", ["--hp", "retain_loss=kl", "--hp", "retain_weight=3",
                                                                  "--loss-head", head, "--optimizer", "sgd", "--lr",
                                                                  "0.3", "--schedule", "constant", "--warmup", "0"])
        check(run_deepspeed("launch/unlearn.py", args, nproc=2, timeout=600))
    loss = {h: [json.loads(x)["loss"] for x in (outs[h] / "metrics.jsonl").read_text().splitlines()
                if '"loss"' in x] for h in outs}
    assert len(loss["fused"]) == 3 and loss["fused"] == pytest.approx(loss["logits"], rel=1e-5, abs=1e-6)
    start = load_file(start_model / "model.safetensors")
    a, b = load_file(outs["fused"] / "model.safetensors"), load_file(outs["logits"] / "model.safetensors")
    assert any((b[n] - start[n]).abs().max() > 1e-4 for n in b)  # it trained: there is an update to compare
    for name, (diff, bound) in sgd_updates(start, a, b, steps=3).items():
        assert diff <= bound, (name, diff, bound)


def test_rmu_layer_beyond_depth_is_refused_before_any_output(start_model, tmp_path):
    out = tmp_path / "bad"
    result = run_python("launch/unlearn.py", unlearn_args(start_model, out, "rmu", ["--hp", "layer=9"]))
    assert result.returncode == 2
    assert "RMU layer index 9 is outside the model's 4 decoder layers" in result.stderr
    assert not out.exists()


def test_identical_forget_and_retain_are_refused(start_model, tmp_path):
    out = tmp_path / "bad"
    args = unlearn_args(start_model, out, "maxent", ["--forget-ops", "+,-", "--retain-ops", "+,-"])
    result = run_python("launch/unlearn.py", args)
    assert result.returncode == 2 and "must be disjoint" in result.stderr
    assert not out.exists()
