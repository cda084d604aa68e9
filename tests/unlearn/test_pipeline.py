"""The pipeline's skip / resume / refuse decisions, with stages replaced by a recording stub."""

import json
import threading
import time
from pathlib import Path

import pytest

import unlearn.pipeline as pipeline
from distill.errors import UserError
from unlearn.pipeline import Pipeline, Stage


class FakeStages:
    """Stands in for `run_stage`: records each call; writes summary.json unless told to 'crash'."""

    def __init__(self, monkeypatch, seconds=0.0):
        self.calls, self.crash, self.seconds = [], set(), seconds
        self.events, self.lock = [], threading.Lock()  # ("start" | "end", stage), in time order
        self.logs = {}
        monkeypatch.setattr(pipeline, "run_stage", self)

    def __call__(self, script, args, nproc, log=None):
        out = Path(args[args.index("--out") + 1])
        with self.lock:
            self.calls.append((out.name, "--overwrite" in args))
            self.events.append(("start", out.name))
        self.logs[out.name] = log
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(f"{out.name} working\rstep 3/5\n")
        time.sleep(self.seconds)
        with self.lock:
            self.events.append(("end", out.name))
        if (out / "summary.json").exists() and "--overwrite" not in args:
            raise RuntimeError(f"stage would refuse: {out} is finished")
        out.mkdir(parents=True, exist_ok=True)
        (out / "partial").write_text("x")
        if out.name in self.crash:
            raise RuntimeError(f"{out.name} killed")
        (out / "summary.json").write_text(json.dumps({"args": args}))


def stages(root, b_args=("--steps", "10"), b_recipe=None):
    return [Stage("a", "launch/pretrain.py", root / "a", ["--steps", "5"]),
            Stage("b", "launch/unlearn.py", root / "b", list(b_args), ["a"], recipe=b_recipe or {"lr": 1e-4}),
            Stage("c", "launch/distill.py", root / "c", [], ["b"]),
            Stage("d", "launch/pretrain.py", root / "d", [])]


def run(root, overwrite=False, **kw):
    p = Pipeline(root, stages(root, **kw), nproc=1, ds_config="ds.json", overwrite=overwrite)
    p.run()
    return p


def test_finished_stages_are_skipped(tmp_path, monkeypatch):
    fake = FakeStages(monkeypatch)
    first = run(tmp_path)
    assert fake.calls == [("a", False), ("b", False), ("c", False), ("d", False)]
    assert all(s is not None for s in first.seconds.values())
    fake.calls.clear()
    again = run(tmp_path)
    assert fake.calls == []
    # a skipped stage reports the time it took when it ran, and is named as reused
    assert again.seconds == first.seconds and again.reused == ["a", "b", "c", "d"]
    assert first.reused == []


def test_an_interrupted_stage_is_started_again_to_resume_and_the_rest_follows(tmp_path, monkeypatch):
    fake = FakeStages(monkeypatch)
    fake.crash = {"c"}
    with pytest.raises(RuntimeError, match="c killed"):
        run(tmp_path)
    assert not (tmp_path / "d").exists()
    fake.crash, fake.calls = set(), []
    run(tmp_path)
    # c is resumed (same arguments, no --overwrite: its partial output is kept for its checkpoint)
    assert fake.calls == [("c", False), ("d", False)]


def test_changed_settings_are_refused_then_redone_with_everything_downstream(tmp_path, monkeypatch):
    fake = FakeStages(monkeypatch)
    run(tmp_path)
    fake.calls.clear()
    with pytest.raises(UserError, match=r"other settings .*b \("):
        run(tmp_path, b_args=("--steps", "20"))
    assert fake.calls == []
    run(tmp_path, overwrite=True, b_args=("--steps", "20"))
    # b's settings changed; c's upstream (b's output) changed with it; a and d are untouched
    assert fake.calls == [("b", True), ("c", True)]


def test_a_changed_default_is_a_changed_setting(tmp_path, monkeypatch):
    """A stage's recipe (a default its script applies, unseen in its arguments) is part of its key: the run
    made under the old default is not reused as if it were the new one's."""
    fake = FakeStages(monkeypatch)
    run(tmp_path, b_recipe={"lr": 1e-4, "grid": (1, 2)})
    fake.calls.clear()
    run(tmp_path, b_recipe={"lr": 1e-4, "grid": (1, 2)})  # the same recipe, read back from pipeline.json
    assert fake.calls == []
    with pytest.raises(UserError, match=r"other settings .*b \("):
        run(tmp_path, b_recipe={"lr": 2e-4, "grid": (1, 2)})
    assert fake.calls == []
    run(tmp_path, overwrite=True, b_recipe={"lr": 2e-4, "grid": (1, 2)})
    assert fake.calls == [("b", True), ("c", True)]


def test_a_second_pipeline_on_a_running_ones_directory_is_refused(tmp_path, monkeypatch):
    """Both would start the same unfinished stage, two jobs writing one output."""
    fake = FakeStages(monkeypatch, seconds=0.5)
    first = threading.Thread(target=run, args=(tmp_path,))
    first.start()
    while not fake.events:
        time.sleep(0.01)
    with pytest.raises(UserError, match=r"another pipeline is running in it \(pid \d+\)"):
        run(tmp_path)
    first.join()
    assert [c for c, _ in fake.calls] == ["a", "b", "c", "d"]  # the first ran each stage once, alone
    run(tmp_path)  # once it has ended the directory is free again
    assert len(fake.calls) == 4


def test_outputs_not_made_by_the_pipeline_are_not_taken_over(tmp_path, monkeypatch):
    FakeStages(monkeypatch)
    (tmp_path / "a").mkdir(parents=True)
    (tmp_path / "a" / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="not by this pipeline"):
        run(tmp_path)


def test_a_stage_finished_before_its_record_was_written_is_not_run_again(tmp_path, monkeypatch):
    fake = FakeStages(monkeypatch)
    run(tmp_path)
    record = json.loads((tmp_path / "pipeline.json").read_text())
    record["d"]["finished"] = False  # as if the pipeline died right after stage d returned
    (tmp_path / "pipeline.json").write_text(json.dumps(record))
    fake.calls.clear()
    run(tmp_path)
    assert fake.calls == []
    assert json.loads((tmp_path / "pipeline.json").read_text())["d"]["finished"] is True


def most_at_once(events):
    now = peak = 0
    for kind, _ in events:
        now += 1 if kind == "start" else -1
        peak = max(peak, now)
    return peak


def test_with_two_jobs_independent_stages_overlap_and_dependents_wait(tmp_path, monkeypatch):
    fake = FakeStages(monkeypatch, seconds=0.3)
    Pipeline(tmp_path, stages(tmp_path), nproc=1, ds_config="ds.json", overwrite=False, jobs=2).run()
    assert most_at_once(fake.events) == 2
    order = fake.events
    for upstream, downstream in (("a", "b"), ("b", "c")):
        assert order.index(("end", upstream)) < order.index(("start", downstream))
    assert sorted(name for name, _ in fake.calls) == ["a", "b", "c", "d"]
    assert fake.logs["b"] == tmp_path / "logs" / "b.log" and fake.logs["b"].is_file()
    assert json.loads((tmp_path / "pipeline.json").read_text())["c"]["finished"] is True


def test_with_two_jobs_a_failure_starts_nothing_new_and_the_running_stage_finishes(tmp_path, monkeypatch, capsys):
    fake = FakeStages(monkeypatch, seconds=0.3)
    fake.crash = {"a"}
    with pytest.raises(RuntimeError, match="a killed"):
        Pipeline(tmp_path, stages(tmp_path), nproc=1, ds_config="ds.json", overwrite=False, jobs=2).run()
    assert sorted(name for name, _ in fake.calls) == ["a", "d"]  # b and c depend on a: never started
    record = json.loads((tmp_path / "pipeline.json").read_text())
    assert record["d"]["finished"] is True and record["a"]["finished"] is False
    out = capsys.readouterr().out
    assert "a: FAILED" in out and "step 3/5" in out  # the failed stage's log tail is shown
