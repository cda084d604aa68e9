"""`launch/relearn.py` under the deepspeed launcher: 2 ZeRO-3 ranks, a tiny model, a few steps."""

import json

import pytest
from launch_helpers import check, run_deepspeed, run_python, save_tiny_model

from distill.launcher import REPO
from unlearn.relearn import relearning_area

pytestmark = pytest.mark.slow


def attack_args(model, out, extra=()):
    return ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--model", str(model), "--out", str(out),
            "--lrs", "1e-3,3e-2", "--steps", "4", "--eval-every", "2", "--eval-per-op", "6",
            "--global-batch", "8", "--micro-batch", "4", *extra]


def test_attack_writes_curves_and_resumes_only_unfinished_runs(tmp_path):
    model = save_tiny_model(tmp_path / "model")
    out = tmp_path / "attack.json"
    check(run_deepspeed("launch/relearn.py", attack_args(model, out), nproc=2, launcher="deepspeed", timeout=600))
    result = json.loads(out.read_text())
    assert result["steps"] == [0, 2, 4] and result["best_lr"][0] is None
    by_lr = result["by_lr"]
    assert set(by_lr) == {"0.001", "0.03"}
    assert result["forget_accuracy"] == [max(c[i] for c in by_lr.values()) for i in range(3)]
    assert result["area"] == pytest.approx(relearning_area([0, 2, 4], result["forget_accuracy"]))
    assert all(0.0 <= a <= 1.0 for a in result["forget_accuracy"])
    # the step-4 point of the strong LR moved the model: losses were logged for every step of both runs
    for part in ("lr0.001-seed0", "lr0.03-seed0"):
        rows = [json.loads(x) for x in (out.with_name("attack.runs") / part / "metrics.jsonl").read_text().split("\n")
                if x]
        assert [r["step"] for r in rows if "loss/ce" in r] == [1, 2, 3, 4]

    # Interrupted after the first run: only the second is trained again, the first is reused as it was.
    kept = out.with_name("attack.runs") / "lr0.001-seed0" / "metrics.jsonl"
    kept_text = kept.read_text()
    out.unlink()
    (out.with_name("attack.runs") / "lr0.03-seed0" / "curve.json").unlink()
    check(run_deepspeed("launch/relearn.py", attack_args(model, out), nproc=2, timeout=600))
    again = json.loads(out.read_text())
    assert kept.read_text() == kept_text
    assert again["forget_accuracy"] == result["forget_accuracy"]

    refused = run_python("launch/relearn.py", attack_args(model, out))
    assert refused.returncode == 2 and "already holds a finished attack" in refused.stderr


@pytest.mark.parametrize("extra,message", [(["--eval-every", "3"], "must divide --steps 4"),
                                           (["--lrs", "1e-3,-1"], "argument --lrs: must be > 0, got -1.0"),
                                           (["--formats", "essay"], "--formats essay")])
def test_bad_attack_settings_are_refused(tmp_path, extra, message):
    model = save_tiny_model(tmp_path / "model")
    result = run_python("launch/relearn.py", attack_args(model, tmp_path / "a.json", extra))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "a.runs").exists()
