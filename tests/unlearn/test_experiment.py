"""The experiment's stages: the --pareto variants of each method, oracle matching, the language setting."""

import dataclasses
from pathlib import Path

import pytest

from unlearn.experiment import GOLD_STEPS, PRETRAIN_DEFAULTS, Settings, build_stages, model_dirs
from unlearn.methods import METHODS


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_declares_a_grid_around_its_default(name):
    method = METHODS[name]
    key, values = method.PARETO_GRID
    assert key in {f.name for f in dataclasses.fields(method.Hparams)}
    assert 3 <= len(values) <= 5 and len(set(values)) == len(values)
    assert getattr(method.Hparams(), key) in values  # the method's main model is one point of its grid


def test_pareto_adds_each_other_grid_value_as_an_unlearned_model_and_its_attack():
    plain = Settings(Path("o"), ["graddiff", "maxent"], [1.0])
    sweep = dataclasses.replace(plain, pareto=True)
    assert set(model_dirs(sweep)) - set(model_dirs(plain)) == {
        "unlearned:graddiff:retain_weight=5", "unlearned:graddiff:retain_weight=30",
        "unlearned:maxent:retain_weight=0.3", "unlearned:maxent:retain_weight=3"}
    stages = {s.name: s for s in build_stages(sweep)}
    variant = stages["unlearned:graddiff:retain_weight=30"]
    assert variant.args[:6] == ["--model", "o/base", "--method", "graddiff", "--hp", "retain_weight=30"]
    assert variant.out == Path("o/pareto/unlearned-graddiff-retain_weight30") and variant.upstream == ["base"]
    assert stages["relearn:unlearned:graddiff:retain_weight=30"].upstream == ["unlearned:graddiff:retain_weight=30"]
    plain_stages = {s.name: s for s in build_stages(plain)}
    assert all(stages[n].args == s.args for n, s in plain_stages.items())  # the main models are unchanged
    quick = dataclasses.replace(sweep, quick=True)
    assert sum(n.startswith("unlearned:maxent:") for n in model_dirs(quick)) == 1


def test_an_unlearning_stage_is_keyed_on_its_methods_defaults(monkeypatch):
    """The unlearning stages pass no --steps or --lr (the method's own defaults apply), so those defaults
    are the stages' recipe: a recalibrated method redoes its stages instead of reusing the old models."""
    settings = Settings(Path("o"), ["graddiff"], [1.0], pareto=True)
    before = {s.name: s.recipe for s in build_stages(settings)}
    assert before["unlearned:graddiff"]["train"]["steps"] == METHODS["graddiff"].TRAIN_DEFAULTS["steps"]
    assert before["unlearned:graddiff"]["hparams"]["retain_weight"] == METHODS["graddiff"].Hparams().retain_weight
    assert before["unlearned:graddiff:retain_weight=30"] == before["unlearned:graddiff"]
    monkeypatch.setitem(METHODS["graddiff"].TRAIN_DEFAULTS, "steps", 999)
    after = {s.name: s.recipe for s in build_stages(settings)}
    assert after["unlearned:graddiff"]["train"]["steps"] == 999
    assert all(after[n] == r for n, r in before.items() if not n.startswith("unlearned:"))


def test_line_adds_one_methods_students_at_its_alphas_and_leaves_the_others_at_alphas():
    plain = Settings(Path("o"), ["graddiff", "maxent"], [1.0])
    line = dataclasses.replace(plain, line={"maxent": [0.2, 1.0, 0.6]})
    added = set(model_dirs(line)) - set(model_dirs(plain))
    assert added == {"undo:maxent:alpha=0.2", "undo:maxent:alpha=0.6"}  # 1 is already every method's
    stages = {s.name: s for s in build_stages(line)}
    student = stages["undo:maxent:alpha=0.2"]
    assert student.args[student.args.index("--alpha") + 1] == "0.2" and "cache:maxent" in student.upstream
    assert stages["relearn:undo:maxent:alpha=0.2"].upstream == ["undo:maxent:alpha=0.2"]
    assert not any(n.startswith("undo:graddiff:alpha=0.") for n in stages)
    # a method without students of its own gets its cache once the line asks for some
    only_line = Settings(Path("o"), ["maxent"], [], line={"maxent": [0.5]})
    names = {s.name for s in build_stages(only_line)}
    assert {"cache:maxent", "undo:maxent:alpha=0.5", "relearn:undo:maxent:alpha=0.5"} <= names


def test_a_students_lr_grows_with_alpha_and_the_fresh_students_stays_2e_3():
    line = Settings(Path("o"), ["maxent"], [1.0], line={"maxent": [0.05, 0.2, 0.6]})
    stages = {s.name: s for s in build_stages(line)}

    def lrs(name):
        args = stages[name].args
        return float(args[args.index("--lr") + 1]), float(args[args.index("--min-lr") + 1])

    peaks = [lrs(f"undo:maxent:alpha={a}")[0] for a in ("0.05", "0.2", "0.6", "1")]
    assert peaks == sorted(peaks) and peaks[0] == peaks[1] / 2  # alphas below 0.1 take 0.1's LR
    assert lrs("undo:maxent:alpha=0.2") == pytest.approx((4e-4, 4e-5))
    args = stages["undo:maxent:alpha=1"].args
    assert args[args.index("--lr"):args.index("--lr") + 4] == ["--lr", "2e-3", "--min-lr", "2e-4"]  # key unchanged


def test_gold_pretrains_longer_than_base_at_full_budgets_and_alike_at_quick_ones():
    def steps(stage):  # the last --steps wins, as in argparse; none: the script's default
        given = [stage.args[i + 1] for i, a in enumerate(stage.args) if a == "--steps"]
        return int(given[-1]) if given else PRETRAIN_DEFAULTS.steps

    full = {s.name: s for s in build_stages(Settings(Path("o"), ["maxent"], []))}
    assert steps(full["gold"]) == GOLD_STEPS > steps(full["base"]) == PRETRAIN_DEFAULTS.steps
    assert "--filter-forget" in full["gold"].args and "--filter-forget" not in full["base"].args
    quick = {s.name: s for s in build_stages(Settings(Path("o"), ["maxent"], [], quick=True))}
    assert steps(quick["gold"]) == steps(quick["base"]) < PRETRAIN_DEFAULTS.steps


def test_oracle_matching_distils_gold_into_base_and_into_a_fresh_init_for_the_whole_budget():
    stages = {s.name: s for s in build_stages(Settings(Path("o"), ["maxent"], [], oracle_matching=True))}
    assert stages["cache:gold"].args[:2] == ["--teacher", "o/gold"] and stages["cache:gold"].upstream == ["gold"]
    from_base, fresh = stages["oracle:base-init"], stages["oracle:fresh-init"]
    assert from_base.args[:2] == ["--student", "o/base"] and "--alpha" not in from_base.args
    assert from_base.args[2:6] == ["--lr", "1e-3", "--min-lr", "1e-4"]  # fine-tuning the full model: its own LR
    assert fresh.args[:2] == ["--alpha", "1"] and "--student" not in fresh.args
    for s in (from_base, fresh):
        i = s.args.index("--teacher")
        assert s.args[i:i + 4] == ["--teacher", "o/gold", "--cache", "o/cache-gold"]
        assert s.args[s.args.index("--retain-gap") + 1] == "-1"  # no early stop: the loss curves run side by side
        assert f"relearn:{s.name}" in stages
    assert "base" in from_base.upstream and "cache:gold" in fresh.upstream
    assert not any(n.startswith(("oracle:", "cache:gold")) for n in
                   (s.name for s in build_stages(Settings(Path("o"), ["maxent"], []))))


def test_language_stages_are_text_task_commands_on_the_settings_files(tmp_path):
    from unlearn.language_setting import FILES

    data = tmp_path / "data"
    data.mkdir()
    for name in FILES:
        (data / f"{name}.jsonl").write_text('{"text": "x"}\n')
    s = Settings(tmp_path / "o", ["maxent"], [1.0], setting="language", data=data, tokenizer=tmp_path / "tok")
    stages = {st.name: st for st in build_stages(s)}

    def arg(stage, flag):
        args = stages[stage].args
        return args[args.index(flag) + 1]

    assert arg("base", "--data").endswith("mix-train.jsonl") and arg("gold", "--data").endswith("english-train.jsonl")
    assert arg("base", "--tokenizer") == str(tmp_path / "tok") and arg("base", "--model") == "gemma2-tiny"
    assert arg("unlearned:maxent", "--forget-data").endswith("korean-train.jsonl")
    assert arg("undo:maxent:alpha=1", "--data").endswith("mix-train.jsonl")  # the students distil on the mix
    assert arg("undo:maxent:alpha=1", "--retain-eval").endswith("english-eval.jsonl")
    assert arg("relearn:gold", "--forget-data").endswith("korean-attack.jsonl")
    assert all(arg(name, "--task") == "text" for name in stages)
    assert s.capability.forget == "forget_ce" and not s.capability.higher_is_capable


def test_language_students_read_their_teacher_online_and_no_cache_is_made(tmp_path):
    from unlearn.language_setting import FILES

    data = tmp_path / "data"
    data.mkdir()
    for name in FILES:
        (data / f"{name}.jsonl").write_text('{"text": "x"}\n')
    s = Settings(tmp_path / "o", ["maxent"], [1.0, 0.6], setting="language", data=data, tokenizer=tmp_path / "tok",
                 oracle_matching=True)
    stages = {st.name: st for st in build_stages(s)}
    assert not any(name.startswith("cache:") for name in stages)
    for name, teacher in [("undo:maxent:alpha=1", "unlearned-maxent"), ("undo:maxent:alpha=0.6", "unlearned-maxent"),
                          ("oracle:base-init", "gold"), ("oracle:fresh-init", "gold")]:
        args = stages[name].args
        i = args.index("--teacher")
        assert args[i:i + 3] == ["--teacher", str(tmp_path / "o" / teacher), "--online"] and "--cache" not in args
    assert stages["undo:maxent:alpha=1"].upstream == ["unlearned:maxent"]
    assert sorted(stages["oracle:base-init"].upstream) == ["base", "gold"]
    assert stages["oracle:fresh-init"].upstream == ["gold"]


def test_language_unlearning_takes_its_own_lr_only_for_the_methods_that_have_one(tmp_path):
    from unlearn.language_setting import FILES, UNLEARN_LR

    data = tmp_path / "data"
    data.mkdir()
    for name in FILES:
        (data / f"{name}.jsonl").write_text('{"text": "x"}\n')
    s = Settings(tmp_path / "o", ["maxent", "graddiff"], [], setting="language", data=data, tokenizer=tmp_path / "t",
                 pareto=True)
    stages = {st.name: st for st in build_stages(s)}
    maxent = [st for name, st in stages.items() if name.startswith("unlearned:maxent")]
    assert len(maxent) > 1  # the --pareto variants too
    for st in maxent:
        assert st.args[st.args.index("--lr") + 1] == UNLEARN_LR["maxent"] == "1e-3"
    assert all("--lr" not in st.args for name, st in stages.items() if name.startswith("unlearned:graddiff"))
    arithmetic = {st.name: st for st in build_stages(Settings(tmp_path / "a", ["maxent"], []))}
    assert "--lr" not in arithmetic["unlearned:maxent"].args  # the method's default there
