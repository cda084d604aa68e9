"""`launch/undo.py --setting language --quick --oracle-matching` end to end on tiny text the test writes:
every stage a `--task text` command, the report on cross-entropy, then skipped on rerun. Its stages run on
one ZeRO-3 rank: each is overhead-bound here, and their two-rank runs are in test_launch_text_task.py (the
arithmetic pipeline, tests/launch/test_undo.py, runs on two)."""

import json
import math
import subprocess
import sys

import pytest
from launch_helpers import check
from text_helpers import ENGLISH, KOREAN, documents, write_jsonl

from distill.launcher import REPO, stage_env
from unlearn.relearn import relearning_area

pytestmark = pytest.mark.slow

NAMES = {"base", "gold", "unlearned:maxent", "undo:maxent:alpha=1", "undo:maxent:alpha=0.5", "oracle:base-init",
         "oracle:fresh-init"}


def language_data(d):
    """The six corpora of the setting, English-like and Korean-like documents (tests/text_helpers.py)."""
    d.mkdir()
    en, ko = documents(ENGLISH, 60, seed=1), documents(KOREAN, 60, seed=2)
    parts = {"english-train": en[:50], "english-eval": en[50:], "korean-train": ko[:40], "korean-eval": ko[40:50],
             "korean-attack": ko[50:], "mix-train": [t for pair in zip(en, ko[:40]) for t in pair] + en[40:50]}
    for name, texts in parts.items():
        write_jsonl(d / f"{name}.jsonl", texts)
    return d


def undo(out, data, *extra):
    return subprocess.run([sys.executable, str(REPO / "launch/undo.py"), "--setting", "language", "--language-data",
                           str(data), "--out", str(out), "--quick", "--nproc", "1", *extra],
                          env=stage_env(), cwd=REPO, capture_output=True, text=True, timeout=1200)


def test_language_setting_with_oracle_matching_end_to_end_then_skipped(tmp_path):
    data, out = language_data(tmp_path / "data"), tmp_path / "run"
    check(undo(out, data, "--alphas", "1,0.5", "--oracle-matching"))
    results = json.loads((out / "results.json").read_text())
    assert results["setting"]["capability"] == {"retain": "retain_ce", "forget": "forget_ce",
                                                "higher_is_capable": False, "label": "cross-entropy (nats/token)"}
    assert set(results["models"]) == NAMES
    for name, m in results["models"].items():
        assert 0.0 < m["retain_ce"] < 2 * math.log(4096) and 0.0 < m["forget_ce"] < 2 * math.log(4096), name
        r = m["relearn"]
        assert r["metric"] == "forget_ce" and r["steps"] == [0, 2, 4], name
        assert r["forget_ce"][0] == pytest.approx(m["forget_ce"], rel=1e-6), name  # @0 is the model itself
        assert r["area"] == pytest.approx(relearning_area(r["steps"], r["forget_ce"])), name
    # gold never saw Korean: its Korean cross-entropy is far above base's even after 20 tiny steps
    assert results["models"]["gold"]["forget_ce"] > results["models"]["base"]["forget_ce"] + 0.5
    for name in ("oracle:base-init", "oracle:fresh-init"):
        loss = results["models"][name]["distill_loss"]
        assert loss["steps"] == list(range(1, 7)) and all(v > 0 for v in loss["loss"]), name
        assert results["models"][name]["compute"]["stopped_by_criterion"] is None  # no criterion: a fixed budget
    report = (out / "report.md").read_text()
    assert all(f"| {name} |" in report for name in NAMES)
    assert "## Oracle matching" in report and "cross-entropy (nats/token)" in report and "accuracy" not in report
    assert "oracle:base-init relearns faster" in report
    for png in ("relearning.png", "alpha_tradeoff.png", "pareto.png", "method_grid.png", "alpha_line.png",
                "oracle_matching.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "tokenizer" / "undo_tokenizer.json").read_text())["vocab"] == 4096

    again = undo(out, data, "--alphas", "1,0.5", "--oracle-matching")
    check(again)
    # every stage: base and gold, unlearning, two students, two oracle students, seven attacks (no cache
    # stages: the language setting's students read their teacher online)
    assert again.stdout.count("finished, skipped") == 2 + 1 + 2 + 2 + 7
    assert "running" not in again.stdout and "training a" not in again.stdout  # nor the tokenizer again


def test_a_missing_corpus_is_refused_naming_it_and_nothing_is_run(tmp_path):
    data = language_data(tmp_path / "data")
    (data / "korean-attack.jsonl").unlink()
    out = tmp_path / "run"
    done = undo(out, data)
    assert done.returncode == 2
    assert "korean-attack.jsonl is missing or empty" in done.stderr and "Traceback" not in done.stderr
    assert not (out / "tokenizer").exists() and not (out / "base").exists()
