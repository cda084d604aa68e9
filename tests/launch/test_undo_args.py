"""`launch/undo.py`'s flags into the experiment's settings, in process (the refusals are in test_bad_input)."""

import importlib.util
from pathlib import Path

from unlearn.experiment import model_dirs

REPO = Path(__file__).resolve().parents[2]


def load_undo():
    spec = importlib.util.spec_from_file_location("undo_script", REPO / "launch/undo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_line_gives_one_method_extra_students():
    undo = load_undo()
    args = undo.parse_args(["--out", "o", "--methods", "graddiff,maxent", "--alphas", "1",
                            "--line", "maxent=0.2, 0.6"])
    assert args.line == ("maxent", (0.2, 0.6))
    settings = undo.settings_of(args, Path("o"), seed=1)
    assert settings.line == {"maxent": [0.2, 0.6]} and settings.seed == 1
    students = sorted(n for n in model_dirs(settings) if n.startswith("undo:"))
    assert students == ["undo:graddiff:alpha=1", "undo:maxent:alpha=0.2", "undo:maxent:alpha=0.6",
                        "undo:maxent:alpha=1"]


def test_without_line_every_method_has_the_same_students():
    undo = load_undo()
    settings = undo.settings_of(undo.parse_args(["--out", "o", "--methods", "rmu,maxent"]), Path("o"), seed=0)
    assert settings.line == {}
    assert {n for n in model_dirs(settings) if n.startswith("undo:")} == {
        f"undo:{m}:alpha={a}" for m in ("rmu", "maxent") for a in ("1", "0.6")}
