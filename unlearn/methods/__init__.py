"""Unlearning methods: one module each, a loss over (forget batch, retain batch, model, reference).

Each module defines `Hparams` (a dataclass of the method's settings, defaults tuned for the built-in
arithmetic testbed), `TRAIN_DEFAULTS` (steps, LR, schedule) and `Objective`.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

from distill.errors import UserError
from distill.knobs import check_knobs
from unlearn.methods import graddiff, maxent, npo, repnoise, rmu, sam, simnpo

METHODS: dict[str, ModuleType] = {"graddiff": graddiff, "maxent": maxent, "rmu": rmu, "npo": npo, "simnpo": simnpo,
                                  "sam": sam, "repnoise": repnoise}


def get_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise UserError(f"unknown unlearning method {name!r}: expected one of {', '.join(METHODS)}")
    return METHODS[name]


def recipe(name: str) -> dict:
    """What `launch/unlearn.py --method name` trains with when no flag says otherwise: the method's
    training defaults and settings (the pipeline keys its unlearning stages on it)."""
    method = get_method(name)
    return {"train": dict(method.TRAIN_DEFAULTS), "hparams": dataclasses.asdict(method.Hparams())}


def parse_hparams(method: ModuleType, overrides: list[str]):
    """The method's Hparams with `key=value` overrides, typed like the defaults and checked as each field
    declares (`distill.knobs`); unknown keys refused."""
    hp = method.Hparams()
    fields = {f.name: f for f in dataclasses.fields(hp)}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--hp {item!r}: expected key=value")
        if key not in fields:
            raise UserError(f"--hp {key}: {method.__name__.split('.')[-1]} has no such setting "
                            f"(expected one of {', '.join(fields)})")
        kind = type(getattr(hp, key))
        try:
            value = kind(raw)
        except ValueError as e:
            raise UserError(f"--hp {key}={raw}: expected a {kind.__name__}") from e
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise UserError(f"--hp {key}={raw}: expected one of {', '.join(choices)}")
        setattr(hp, key, value)
    check_knobs(hp, flag=lambda f: f"--hp {f.name}")  # finite numbers, and each setting's declared check
    return hp


def build_objective(method: ModuleType, hp, reference=None, config=None, fused: bool = False):
    """Instantiate a method's objective (`fused`: its terms through the fused head); a bad setting (e.g. an
    RMU layer past the depth) is a UserError."""
    try:
        objective = method.Objective(hp, reference, config)
    except ValueError as e:
        raise UserError(str(e)) from e
    objective.fused = fused
    return objective
