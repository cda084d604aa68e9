"""The experiment's stages: the --pareto variants of each method."""

import dataclasses
from pathlib import Path

import pytest

from unlearn.experiment import Settings, build_stages, model_dirs
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
