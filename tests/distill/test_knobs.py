"""One declaration per knob: flags, defaults, checks and the recorded config come from the dataclass."""

import argparse
import dataclasses
from dataclasses import dataclass

import pytest

from distill.engine import TrainConfig
from distill.errors import UserError
from distill.knobs import add_knobs, check_knobs, from_args, knob, positive, unit_interval, valid_regex


@dataclass
class Example:
    rate: float = knob(0.5, "a rate", check=unit_interval)
    size: int | None = knob(None, "a size", check=positive)
    pattern: str = knob(".*", "a regex", check=valid_regex)
    mode: str = knob("a", "a mode", choices=("a", "b"))
    fast: bool = knob(False, "go fast")
    internal: int = 3  # not a flag


def parse(argv, defaults=None):
    p = argparse.ArgumentParser(exit_on_error=False)
    add_knobs(p, Example, defaults or Example())
    return from_args(Example, p.parse_args(argv))


def test_flags_types_and_defaults_derive_from_the_fields():
    assert parse([]) == Example()
    got = parse(["--rate", "0.25", "--size", "7", "--pattern", "mlp", "--mode", "b", "--fast"])
    assert got == Example(rate=0.25, size=7, pattern="mlp", mode="b", fast=True)
    assert parse([], defaults=Example(rate=0.75)).rate == 0.75  # a stage's own default


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "x"])
def test_non_finite_floats_are_refused_by_the_parser(text):
    with pytest.raises(argparse.ArgumentError, match="--rate"):
        parse(["--rate", text])


@pytest.mark.parametrize("value,message", [
    (Example(rate=1.5), "--rate must lie in [0, 1], got 1.5"),
    (Example(size=0), "--size must be > 0, got 0"),
    (Example(pattern="(["), "--pattern is not a valid regular expression"),
    (Example(rate=float("nan")), "--rate must be a finite number, got nan"),
])
def test_checks_name_the_flag_and_the_value(value, message):
    with pytest.raises(UserError) as e:
        check_knobs(value)
    assert message in str(e.value)


def test_the_training_config_is_its_flags():
    p = argparse.ArgumentParser()
    add_knobs(p, TrainConfig, TrainConfig(steps=7))
    flags = {a.dest for a in p._actions} - {"help"}
    knobs = {f.name for f in dataclasses.fields(TrainConfig) if "help" in f.metadata}
    assert flags == knobs and {"steps", "lr", "warmup_steps", "activation_checkpointing"} <= knobs
    cfg = from_args(TrainConfig, p.parse_args(["--lr", "0.01", "--warmup", "2"]))
    assert (cfg.steps, cfg.lr, cfg.warmup_steps) == (7, 0.01, 2)
