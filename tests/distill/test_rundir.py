import json

import pytest

from distill import rundir
from distill.errors import UserError


def test_fresh_then_resume_with_same_config(tmp_path):
    out = tmp_path / "run"
    assert rundir.prepare(out, {"lr": 1e-3, "steps": 10}, overwrite=False) == "fresh"
    assert json.loads((out / rundir.RUN_CONFIG).read_text()) == {"lr": 1e-3, "steps": 10}
    assert rundir.prepare(out, {"lr": 1e-3, "steps": 10}, overwrite=False) == "resume"


def test_changed_config_names_the_changed_keys(tmp_path):
    out = tmp_path / "run"
    rundir.prepare(out, {"train": {"lr": 1e-3}, "steps": 10}, overwrite=False)
    with pytest.raises(UserError, match=r"train.lr: 0.001 -> 0.002"):
        rundir.prepare(out, {"train": {"lr": 2e-3}, "steps": 10}, overwrite=False)


def test_finished_run_is_not_overwritten_without_asking(tmp_path):
    out = tmp_path / "run"
    rundir.prepare(out, {"a": 1}, overwrite=False)
    rundir.write_json(out / rundir.SUMMARY, {"done": True})
    with pytest.raises(UserError, match="already holds a finished run"):
        rundir.prepare(out, {"a": 1}, overwrite=False)
    assert rundir.prepare(out, {"a": 1}, overwrite=True) == "fresh"
    assert not (out / rundir.SUMMARY).exists()


def test_foreign_directory_is_never_touched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(UserError, match="not an UNDO run directory"):
        rundir.prepare(out, {"a": 1}, overwrite=False)
    with pytest.raises(UserError, match="not deleting it"):
        rundir.prepare(out, {"a": 1}, overwrite=True)
    assert (out / "precious.txt").read_text() == "keep"
