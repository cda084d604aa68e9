"""What the engine optimises: an objective counts its targets, then returns a normalised loss.

The engine normalises every loss term by its number of targets over the *whole* optimizer step (all
accumulation steps on all ranks), so a step's gradient is the same on 1 or N ranks at the same
global batch. It works in two passes:

1. `count(batch)` for each of this rank's micro-batches, summed over ranks: `totals[term]`;
2. `__call__(model, batch, totals)` per micro-batch returns the micro-batch's share of the step loss,
   `sum_t weight_t * loss_sum_t(batch) / totals[t]`, plus the raw per-term sums for logging.

An objective also owns the module it trains: `wrap(causal_lm)` puts the built model inside whatever head
its loss needs (the fused-linear head, a terms interface) before DeepSpeed sees it; by default the
model itself.

Stages with several terms (unlearning: forget and retain) declare one count per term.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from distill.data import IGNORE_INDEX


class Objective(Protocol):
    def count(self, batch: dict) -> dict[str, int]: ...

    def wrap(self, causal_lm) -> torch.nn.Module: ...

    def __call__(self, model, batch: dict, totals: dict[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ...


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Next-token targets (B, T-1): position t predicts labels[t+1]."""
    return labels[:, 1:]


def count_targets(labels: torch.Tensor) -> int:
    return int((shifted_targets(labels) != IGNORE_INDEX).sum())


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy in fp32. logits (B, T, V), labels (B, T) with IGNORE_INDEX."""
    logits = logits[:, :-1].float()
    targets = shifted_targets(labels)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


class CausalLMObjective:
    """Plain next-token cross-entropy, mean over every target token of the step (pretraining)."""

    def count(self, batch: dict) -> dict[str, int]:
        return {"ce": count_targets(batch["labels"])}

    def wrap(self, causal_lm):
        return causal_lm

    def __call__(self, model, batch, totals):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ce_sum = token_cross_entropy(logits, batch["labels"])
        loss = ce_sum / max(totals["ce"], 1.0)
        return loss, {"ce": ce_sum.detach()}
