"""Bad input stops with one clear line, exit code 2, and no output directory that looks complete."""

import json

import pytest
from launch_helpers import run_python, run_python_batch, tiny_run_args

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


def pretrain_args(tmp_path, flags):
    return "launch/pretrain.py", tiny_run_args(tmp_path / "out", micro=4, extra=flags)


def distill_args(tmp_path, flags):
    return "launch/distill.py", ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--teacher",
                                 str(tmp_path / "teacher"), "--online", "--out", str(tmp_path / "out"), *flags]


def precompute_args(tmp_path, flags):
    return "launch/precompute.py", ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--teacher", str(tmp_path),
                                    "--out", str(tmp_path / "out"), *flags]


def evaluate_args(tmp_path, flags):
    return "launch/evaluate.py", ["--model", str(tmp_path / "model"), "--out", str(tmp_path / "out" / "e.json"), *flags]


def relearn_args(tmp_path, flags):
    return "launch/relearn.py", ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--model", str(tmp_path / "m"),
                                 "--out", str(tmp_path / "out" / "attack.json"), *flags]


def unlearn_args(tmp_path, flags):
    return "launch/unlearn.py", ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--model", str(tmp_path / "m"),
                                 "--out", str(tmp_path / "out"), *flags]


def undo_args(tmp_path, flags):
    return "launch/undo.py", ["--out", str(tmp_path / "out"), *flags]


BAD_FLAGS = [  # (the command, bad flags, what the one-line error names)
    (pretrain_args, ["--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
    (pretrain_args, ["--lr", "inf"], "argument --lr: expected a finite number, got 'inf'"),
    (pretrain_args, ["--lr", "0"], "--lr must be > 0, got 0.0"),
    (pretrain_args, ["--micro-batch", "0"], "--micro-batch must be at least 1, got 0"),
    (pretrain_args, ["--steps", "0"], "--steps must be at least 1, got 0"),
    (pretrain_args, ["--weight-decay", "-0.1"], "--weight-decay must be >= 0, got -0.1"),
    (pretrain_args, ["--keep-checkpoints", "0"], "--keep-checkpoints must be at least 1, got 0"),
    (pretrain_args, ["--schedule", "sawtooth"], "argument --schedule: invalid choice: 'sawtooth'"),
    (distill_args, ["--alpha", "nan"], "argument --alpha: expected a finite number, got 'nan'"),
    (distill_args, ["--alpha", "1.5"], "--alpha must lie in [0, 1], got 1.5"),
    (distill_args, ["--beta", "-1"], "--beta must be >= 0, got -1.0"),
    (distill_args, ["--temperature", "0"], "--temperature must be > 0, got 0.0"),
    (distill_args, ["--perturb-pattern", "(["], "--perturb-pattern is not a valid regular expression"),
    (precompute_args, ["--records-per-shard", "0"], "--records-per-shard must be at least 1, got 0"),  # not "default"
    (precompute_args, ["--top-k", "0"], "--top-k must be at least 1, got 0"),
    (precompute_args, ["--temperature", "0"], "--temperature must be > 0, got 0.0"),
    (precompute_args, ["--temperature", "inf"], "argument --temperature: expected a finite number, got 'inf'"),
    (precompute_args, ["--zstd-level", "30"], "--zstd-level must lie in [1, 22], got 30"),
    (precompute_args, ["--rows", "0"], "argument --rows: must be at least 1, got 0"),
    (pretrain_args, ["--seq-len", "1"], "argument --seq-len: must be at least 2, got 1"),
    (distill_args, ["--retain-gap", "nan"], "argument --retain-gap: expected a finite number, got 'nan'"),
    (evaluate_args, ["--per-format", "0"], "argument --per-format: must be at least 1, got 0"),
    (evaluate_args, ["--batch-size", "x"], "argument --batch-size: expected int value, got 'x'"),
    (evaluate_args, ["--device", "tpu9"], "argument --device: unknown device 'tpu9'"),
    (evaluate_args, ["--ops", "+,^"], "unknown operation '^'"),
    (relearn_args, ["--lrs", "1e-3,nan"], "argument --lrs: expected a finite number, got 'nan'"),
    (relearn_args, ["--lrs", "1e-3,0"], "argument --lrs: must be > 0, got 0.0"),
    (relearn_args, ["--seeds", "0,x"], "argument --seeds: expected int value, got 'x'"),
    (relearn_args, ["--eval-per-op", "0"], "argument --eval-per-op: must be at least 1, got 0"),
    (relearn_args, ["--formats", "haiku"], "--formats haiku: expected some of"),
    (unlearn_args, ["--method", "forgetall"], "unknown unlearning method 'forgetall'"),
    (unlearn_args, ["--hp", "strength=1"], "--hp strength: maxent has no such setting"),
    (unlearn_args, ["--hp", "retain_weight"], "--hp 'retain_weight': expected key=value"),
    (unlearn_args, ["--hp", "retain_weight=-1"], "--hp retain_weight must be >= 0, got -1.0"),
    (unlearn_args, ["--method", "npo", "--hp", "beta=nan"], "--hp beta must be a finite number, got nan"),
    (unlearn_args, ["--method", "npo", "--hp", "beta=0"], "--hp beta must be > 0, got 0.0"),
    (unlearn_args, ["--method", "graddiff", "--hp", "retain_loss=mse"], "--hp retain_loss=mse: expected one of ce, kl"),
    (unlearn_args, ["--method", "rmu", "--hp", "param_pattern=(["], "--hp param_pattern is not a valid regular"),
    (unlearn_args, ["--word-fraction", "1.5"], "argument --word-fraction: must lie in [0, 1], got 1.5"),
    (undo_args, ["--alphas", "1,2"], "argument --alphas: must lie in [0, 1], got 2.0"),
    (undo_args, ["--alphas", "nan"], "argument --alphas: expected a finite number, got 'nan'"),
    (undo_args, ["--alphas", "1,1"], "--alphas [1.0, 1.0]: each alpha once"),
    (undo_args, ["--line", "0.2,0.4"], "argument --line: expected METHOD=ALPHAS with METHOD one of"),
    (undo_args, ["--line", "maxent=0.2,1.5"], "argument --line: must lie in [0, 1], got 1.5"),
    (undo_args, ["--line", "maxent=0.2,0.2"], "argument --line: each alpha once, got '0.2,0.2'"),
    (undo_args, ["--line", "rmu=0.2"], "--line rmu=...: rmu is not among --methods maxent"),
    (undo_args, ["--methods", "maxent,forgetall"], "--methods: unknown ['forgetall']"),
    (undo_args, ["--nproc", "0"], "argument --nproc: must be at least 1, got 0"),
    (undo_args, ["--jobs", "0"], "argument --jobs: must be at least 1, got 0"),
    (undo_args, ["--retain-gap", "inf"], "argument --retain-gap: expected a finite number, got 'inf'"),
    (undo_args, ["--seeds", "1,1"], "--seeds [1, 1]: each seed once"),
]


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    """Every row of BAD_FLAGS run through its script's CLI, each in a folder of its own, in one process."""
    folders = [tmp_path_factory.mktemp(f"bad{i}") for i in range(len(BAD_FLAGS))]
    results = run_python_batch([command(d, flags) for d, (command, flags, _) in zip(folders, BAD_FLAGS)])
    return list(zip(folders, results))


@pytest.mark.parametrize("row", range(len(BAD_FLAGS)),
                         ids=[f"{c.__name__.split('_')[0]}:{' '.join(f)}" for c, f, _ in BAD_FLAGS])
def test_bad_flags_are_one_line_and_write_nothing(bad_flag_runs, row):
    folder, result = bad_flag_runs[row]
    message = BAD_FLAGS[row][2]
    assert result.returncode == 2 and message in result.stderr, result.stderr[-3000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "usage:" not in result.stderr, result.stderr
    assert not (folder / "out").exists()


def test_a_corrected_command_runs_into_the_same_out(tmp_path):
    out = tmp_path / "out"
    refused = run_python("launch/pretrain.py", tiny_run_args(out, micro=4, steps=2, extra=["--lr", "nan"]))
    assert refused.returncode == 2 and not out.exists()
    fixed = run_python("launch/pretrain.py", tiny_run_args(out, micro=4, steps=2))
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert (out / "summary.json").exists()
