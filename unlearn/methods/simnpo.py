"""SimNPO: NPO without a reference, on the length-normalised answer NLL.

    L = -(2 / beta) * mean_seq log sigmoid(beta * (NLL(y|x) / |y| - delta)) + retain_weight * CE(retain)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from distill.knobs import knob, non_negative, positive
from unlearn.methods.common import UnlearnObjective
from unlearn.methods.terms import run_terms


@dataclass
class Hparams:
    beta: float = knob(4.5, "inverse temperature of the preference loss", check=positive)
    delta: float = knob(0.0, "reward margin")
    retain_weight: float = knob(1.0, "weight of the retain term", check=non_negative)


TRAIN_DEFAULTS = dict(steps=60, lr=3e-4, schedule="constant", warmup_steps=0)
PARETO_GRID = ("beta", (1.5, 4.5, 13.5))  # --pareto: the inverse temperature, the default among the values


class Objective(UnlearnObjective):
    def forget_loss(self, model, rows, totals):
        def loss_of(logp, n):
            mean_nll = -logp / n.clamp(min=1)
            per_seq = -(2.0 / self.hp.beta) * F.logsigmoid(self.hp.beta * (mean_nll - self.hp.delta))
            return (per_seq * (n > 0)).sum()

        total = run_terms(model, rows, lambda t: t.sequence_loss(rows["labels"], loss_of))
        return total / max(totals["forget_seqs"], 1.0), {"forget_seqs": total.detach()}
