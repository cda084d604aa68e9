"""One declaration per knob: a dataclass field carries its flag, help and check, and the command-line flags,
their validation and the recorded run configuration all derive from it.

    @dataclass
    class TrainConfig:
        lr: float = knob(2e-3, "peak learning rate", check=positive)

    add_knobs(parser_group, TrainConfig, stage_defaults)   # --lr, typed, with the stage's default
    cfg = from_args(TrainConfig, args)                     # the dataclass of the parsed flags
    check_knobs(cfg)                                       # UserError naming the flag and the value

Floats are parsed refusing nan and inf (a nan learning rate would train to nan without a word); the
checks run before a launch script creates its output directory, so a refused command writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing

from distill.errors import UserError


def knob(default, help: str, *, flag: str | None = None, check=None, choices: tuple | None = None):
    """A dataclass field that is also a command-line flag (default: --field-name)."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "check": check,
                                                        "choices": choices})


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def knob_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


# -- checks: (value) -> None, or a message saying what was expected --------------------------------

def positive(value) -> str | None:
    return None if value is None or value > 0 else "must be > 0"


def at_least(lowest: int):
    def check(value) -> str | None:
        return None if value is None or value >= lowest else f"must be at least {lowest}"
    return check


at_least_one = at_least(1)


def non_negative(value) -> str | None:
    return None if value is None or value >= 0 else "must be >= 0"


def unit_interval(value) -> str | None:
    return None if value is None or 0.0 <= value <= 1.0 else "must lie in [0, 1]"


def valid_regex(value) -> str | None:
    import re

    try:
        re.compile(value)
    except re.error as e:
        return f"is not a valid regular expression ({e})"
    return None


def finite_float(text: str) -> float:
    """argparse type: a float that is neither nan nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value




def open_unit_interval(value) -> str | None:
    return None if value is None or 0.0 < value < 1.0 else "must lie in (0, 1)"


def checked(kind, check=None):
    """argparse type for a flag that is not a knob field: `kind` (int, or float refusing nan/inf), then
    `check`; a refusal reads "argument --flag: must be at least 1, got 0" (one line, exit 2)."""
    def parse(text: str):
        if kind is float:
            value = finite_float(text)
        else:
            try:
                value = kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {kind.__name__} value, got {text!r}") from None
        problem = check(value) if check else None
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {value}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def listed(kind, check=None, allow_empty: bool = False):
    """argparse type for a comma-separated list, each item parsed and checked as `checked(kind, check)`."""
    item = checked(kind, check)

    def parse(text: str) -> tuple:
        values = tuple(item(part.strip()) for part in text.split(",") if part.strip())
        if not values and not allow_empty:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}")
        return values

    parse.__name__ = f"{kind.__name__} list"
    return parse


def _base_type(hint):
    """int / float / str / bool of a field's annotation (`int | None` -> int)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_knobs(group, cls, defaults) -> None:
    """One flag per knob of `cls`, its default taken from the `defaults` instance (a stage's own)."""
    hints = typing.get_type_hints(cls)
    for f in knob_fields(cls):
        kind, default = _base_type(hints[f.name]), getattr(defaults, f.name)
        opts = dict(dest=f.name, help=f.metadata["help"])
        if kind is bool:
            group.add_argument(flag_of(f), action="store_true", **opts)
            continue
        if f.metadata.get("choices"):
            opts["choices"] = f.metadata["choices"]
        group.add_argument(flag_of(f), type=finite_float if kind is float else kind, default=default, **opts)


def from_args(cls, args, defaults=None, **extra):
    """An instance of `cls` with every knob read from the parsed `args` (other fields: `extra`, else defaults)."""
    base = defaults if defaults is not None else cls()
    values = {f.name: getattr(args, f.name, getattr(base, f.name)) for f in knob_fields(cls)}
    return dataclasses.replace(base, **values, **extra)


def check_knobs(obj, flag=flag_of) -> None:
    """Run every knob's check; the first failure is a UserError naming the flag (`flag(field)`) and the value."""
    for f in knob_fields(type(obj)):
        check, value = f.metadata.get("check"), getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag(f)} must be a finite number, got {value}")
        problem = check(value) if check else None
        if problem:
            raise UserError(f"{flag(f)} {problem}, got {value}")
