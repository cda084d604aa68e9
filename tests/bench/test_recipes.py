"""bench/recipes.py's rescoring: reused for the same weights only."""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("recipes_bench", REPO / "bench" / "recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_model_redone_under_a_new_recipe_is_scored_again(tmp_path, monkeypatch):
    bench = load_bench()
    calls = []

    def fake_evaluate(cmd, **kw):  # stands in for launch/evaluate.py: one score per call
        calls.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        out.write_text(json.dumps({"counts": {"+ equation": 4}, "retain_accuracy": len(calls) / 10}))

    monkeypatch.setattr(bench.subprocess, "run", fake_evaluate)
    model, scores = tmp_path / "unlearned-graddiff", tmp_path / "eval" / "unlearned-graddiff.json"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"40 steps")
    first = bench.rescore(scores, model, per_format=4)
    assert bench.rescore(scores, model, per_format=4) == first and len(calls) == 1  # same weights: reused
    (model / "model.safetensors").write_bytes(b"120 steps")
    assert bench.rescore(scores, model, per_format=4)["retain_accuracy"] == 0.2 and len(calls) == 2
    assert bench.rescore(scores, model, per_format=8) and len(calls) == 3  # another size: scored again
