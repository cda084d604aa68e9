"""MaxEnt: push the forget answers' next-token distribution to uniform.

    per forget token: KL(Uniform || p) = -log V - (1/V) sum_v log p_v
    L = mean over forget tokens + retain_weight * CE(retain)

Unlike gradient ascent it is bounded below (by 0), so it can run longer without diverging.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.knobs import knob, non_negative
from unlearn.methods.common import UnlearnObjective
from unlearn.methods.terms import run_terms


@dataclass
class Hparams:
    retain_weight: float = knob(1.0, "weight of the retain term", check=non_negative)


TRAIN_DEFAULTS = dict(steps=60, lr=3e-4, schedule="constant", warmup_steps=0)
PARETO_GRID = ("retain_weight", (0.3, 1.0, 3.0))  # --pareto: the retain weight, the default among the values


class Objective(UnlearnObjective):
    def forget_loss(self, model, rows, totals):
        kl = run_terms(model, rows, lambda t: t.uniform_kl(rows["labels"]))
        return kl / max(totals["forget"], 1.0), {"forget": kl.detach()}
