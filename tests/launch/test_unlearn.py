"""`launch/unlearn.py` under the deepspeed launcher: every method, 2 ZeRO-3 ranks, a few steps."""

import json

import pytest
import torch
from launch_helpers import check, run_deepspeed, run_python, save_tiny_model
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


@pytest.mark.parametrize("method", ["graddiff", "maxent", "rmu", "npo", "simnpo"])
def test_each_method_runs_on_two_zero3_ranks(start_model, tmp_path, method):
    out = tmp_path / method
    check(run_deepspeed("launch/unlearn.py", unlearn_args(start_model, out, method), nproc=2, timeout=600))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and 0.0 <= summary["evaluation"]["forget_accuracy"] <= 1.0
    saved = json.loads((out / "run_config.json").read_text())
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
