"""SimNPO: NPO without a reference, on the length-normalised answer NLL.

    L = -(2 / beta) * mean_seq log sigmoid(beta * (NLL(y|x) / |y| - delta)) + retain_weight * CE(retain)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from unlearn.methods.common import UnlearnObjective, sequence_logprob


@dataclass
class Hparams:
    beta: float = 4.5
    delta: float = 0.0
    retain_weight: float = 1.0


TRAIN_DEFAULTS = dict(steps=60, lr=3e-4, schedule="constant", warmup_steps=0)


class Objective(UnlearnObjective):
    def forget_loss(self, model, rows, totals):
        logp, n = sequence_logprob(model, rows)
        has_target = n > 0
        mean_nll = -logp / n.clamp(min=1)
        per_seq = -(2.0 / self.hp.beta) * F.logsigmoid(self.hp.beta * (mean_nll - self.hp.delta))
        total = (per_seq * has_target).sum()
        return total / max(totals["forget_seqs"], 1.0), {"forget_seqs": total.detach()}
