"""SAM unlearning: NPO minimised at the worst-case weights within radius rho (sharpness-aware).

    L(w) = NPO(forget) + retain_weight * CE(retain)          (as `unlearn.methods.npo`)
    step with grad L(w + e),  e = rho * grad L(w) / ||grad L(w)||

A relearning attack is a small move of the weights that brings the forget answers back; a minimum
whose neighbourhood also keeps them forgotten resists it better. The perturbation costs one extra
forward and backward per step (`distill.sharpness`, run by the engine; ZeRO stage 3 only).
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.knobs import knob, non_negative, positive
from unlearn.methods import npo


@dataclass
class Hparams:
    rho: float = knob(0.05, "radius of the worst-case weight perturbation (L2 over all trained weights)",
                      check=positive)
    beta: float = knob(0.1, "inverse temperature of the NPO loss", check=positive)
    retain_weight: float = knob(1.0, "weight of the retain term", check=non_negative)


TRAIN_DEFAULTS = dict(npo.TRAIN_DEFAULTS)


class Objective(npo.Objective):
    def __init__(self, hp: Hparams, reference=None, config=None):
        super().__init__(hp, reference, config)
        self.sharpness_radius = hp.rho  # read by the engine
