"""Bad input stops with one clear line, exit code 2, and no output directory that looks complete."""

import json

import pytest
from launch_helpers import run_python, tiny_run_args

from distill.launcher import REPO

pytestmark = pytest.mark.slow


def refused(tmp_path, *, replace=None, append=(), expect: str):
    out = tmp_path / "out"
    args = tiny_run_args(out, micro=4, extra=append)
    for old, new in (replace or {}).items():
        args[args.index(old)] = new
    result = run_python("launch/pretrain.py", args)
    assert result.returncode == 2, result.stderr[-3000:]
    assert expect in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (out / "summary.json").exists() and not (out / "config.json").exists()
    return out


def test_unknown_preset(tmp_path):
    out = refused(tmp_path, replace={"gemma2-tiny": "gemma2-huge"}, expect="unknown model preset 'gemma2-huge'")
    assert not out.exists()


def test_missing_model_directory(tmp_path):
    missing = str(tmp_path / "no-such-model")
    out = refused(tmp_path, replace={"gemma2-tiny": missing}, expect=f"model directory {missing} does not exist")
    assert not out.exists()


def test_unknown_operation(tmp_path):
    out = refused(tmp_path, append=("--ops", "+,^"), expect="unknown operation '^'")
    assert not out.exists()


def test_inconsistent_deepspeed_config(tmp_path):
    cfg = json.loads((REPO / "ds_configs/zero3.json").read_text())
    cfg["train_batch_size"] = 64
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(cfg))
    out = refused(tmp_path, append=("--ds_config", str(bad)),  # the later flag wins
                  expect="train_batch_size is 64 but the run uses 8 (--global-batch)")
    assert not out.exists()


def test_evaluate_missing_model(tmp_path):
    result = run_python("launch/evaluate.py", ["--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "e.json")])
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "e.json").exists()
