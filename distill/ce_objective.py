"""Next-token cross-entropy through the fused-linear head: the (tokens x vocab) logits are never held.

Cross-entropy against label y is the sampled-kind KL with one sample of weight 1 (-sum_j w_j log q_j =
-log q_y), so the chunked fused-linear loss of `distill.losses` computes it from the final hidden states
and the output matrix, gradients included, a chunk of rows at a time. At Gemma's 256k vocabulary and
4 x 2,048 tokens the materialised float32 logits alone are 8.4 GB; here the peak is a chunk.

`loss_head`: "fused", "logits" (the model's own logits, `distill.objective.CausalLMObjective`) or "auto":
fused from FUSED_FROM_VOCAB rows of output matrix up, where the logits start to cost memory, and the
logits below (the arithmetic testbed's 77 tokens).
"""

from __future__ import annotations

import torch

from distill.data import IGNORE_INDEX
from distill.kd_objective import StudentWithKLHead
from distill.objective import CausalLMObjective, count_targets

LOSS_HEADS = ("auto", "fused", "logits")
FUSED_FROM_VOCAB = 8192


def add_loss_head_arg(p) -> None:
    """--loss-head, declared once for every stage whose losses read the output matrix."""
    p.add_argument("--loss-head", default="auto", choices=LOSS_HEADS,
                   help="fused: the loss terms from the final hidden states through the chunked fused-linear "
                        f"head, never holding the (tokens x vocab) logits; logits: on the model's logits; auto: "
                        f"fused from {FUSED_FROM_VOCAB} rows of output matrix up")


def uses_fused_head(loss_head: str, vocab_size: int) -> bool:
    if loss_head not in LOSS_HEADS:
        raise ValueError(f"loss head must be one of {', '.join(LOSS_HEADS)}, got {loss_head!r}")
    return loss_head == "fused" or (loss_head == "auto" and vocab_size >= FUSED_FROM_VOCAB)


def with_ce_head(causal_lm) -> StudentWithKLHead:
    """The model and a fused head over every row of its output matrix (the logits' softmax runs over all)."""
    return StudentWithKLHead(causal_lm, "sampled", causal_lm.config.vocab_size)


def next_token_targets(labels: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Each position's next label as a one-sample sampled-kind target ((ids, weights), both (B*T, 1)) and
    the mask of counted positions (B*T,): position t predicts labels[t + 1], the last position nothing."""
    pad = torch.full_like(labels[:, :1], IGNORE_INDEX)
    nxt = torch.cat([labels[:, 1:], pad], 1).reshape(-1)
    mask = nxt != IGNORE_INDEX
    ids = nxt.clamp(min=0)[:, None]  # ignored positions are masked; no negative id reaches a gather
    return (ids, torch.ones(ids.shape, dtype=torch.float32, device=ids.device)), mask


class FusedCausalLMObjective:
    """CausalLMObjective's loss (mean next-token cross-entropy over the step's targets) on a model wrapped
    by `with_ce_head`."""

    def count(self, batch: dict) -> dict[str, int]:
        return {"ce": count_targets(batch["labels"])}

    def wrap(self, causal_lm) -> StudentWithKLHead:
        return with_ce_head(causal_lm)

    def __call__(self, model, batch, totals):
        target, mask = next_token_targets(batch["labels"])
        loss_sum, _ = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            target=target, mask=mask)
        return loss_sum / max(totals["ce"], 1.0), {"ce": loss_sum.detach()}


def causal_lm_loss(loss_head: str, vocab_size: int):
    """The objective of a causal-LM stage (its `wrap` makes the built model what it trains)."""
    return FusedCausalLMObjective() if uses_fused_head(loss_head, vocab_size) else CausalLMObjective()
