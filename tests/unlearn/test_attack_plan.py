"""The attack's settings are refused with one message naming the flag before anything runs."""

import pytest

from distill.errors import UserError
from unlearn.attack import AttackPlan


@pytest.mark.parametrize("lrs,seeds,steps,every,message", [
    ((float("nan"),), (0,), 10, 5, "--lrs must be finite positive"),
    ((float("inf"),), (0,), 10, 5, "--lrs must be finite positive"),
    ((0.0,), (0,), 10, 5, "--lrs must be finite positive"),
    ((), (0,), 10, 5, "--lrs must be finite positive"),
    ((1e-3, 1e-3), (0,), 10, 5, "must not repeat a value"),
    ((1e-3,), (), 10, 5, "--seeds must name at least one seed"),
    ((1e-3,), (0,), 10, 3, "--eval-every 3 must divide --steps 10"),
])
def test_bad_attack_settings(lrs, seeds, steps, every, message):
    with pytest.raises(UserError, match=message):
        AttackPlan(lrs, seeds, steps, every).validate()


def test_good_settings_give_the_evaluation_steps():
    plan = AttackPlan((1e-4, 3e-4), (0, 1), 10, 5)
    plan.validate()
    assert plan.eval_steps == [0, 5, 10]
