"""MaxEnt: push the forget answers' next-token distribution to uniform.

    per forget token: KL(Uniform || p) = -log V - (1/V) sum_v log p_v
    L = mean over forget tokens + retain_weight * CE(retain)

Unlike gradient ascent it is bounded below (by 0), so it can run longer without diverging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distill.data import IGNORE_INDEX
from unlearn.methods.common import UnlearnObjective


@dataclass
class Hparams:
    retain_weight: float = 1.0


TRAIN_DEFAULTS = dict(steps=60, lr=3e-4, schedule="constant", warmup_steps=0)


def uniform_kl_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over labelled next-token positions of KL(Uniform || softmax(logits)). logits (B, T, V)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    mask = labels[:, 1:] != IGNORE_INDEX
    per_token = -math.log(logp.size(-1)) - logp.mean(-1)
    return (per_token * mask).sum()


class Objective(UnlearnObjective):
    def forget_loss(self, model, rows, totals):
        logits = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits
        kl = uniform_kl_sum(logits, rows["labels"])
        return kl / max(totals["forget"], 1.0), {"forget": kl.detach()}
