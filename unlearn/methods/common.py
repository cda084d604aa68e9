"""What every unlearning method shares: the batch layout, token log-probs, the retain term.

A batch is {"forget": rows, "retain": rows}; forget rows are labelled on the answer tokens only,
retain rows on every token (see `unlearn.tasks.forget_retain`). Every term is a sum over its own
targets divided by the number of those targets in the whole optimizer step (`totals`), so the
result does not depend on the number of ranks or accumulation steps.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass

import torch

from distill.data import IGNORE_INDEX
from distill.objective import count_targets, token_cross_entropy


def target_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(next token) at every position, (B, T-1), and the mask of counted positions.

    Ignored labels (-100) are replaced by a valid id *before* the gather: a negative index would wrap
    around the vocabulary and read some other token's probability. Masked positions read 0.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, targets.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def sequence_logprob(model, rows: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob of each row's labelled tokens (B,) and their number (B,)."""
    logits = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits
    picked, mask = target_logprobs(logits, rows["labels"])
    return picked.sum(-1), mask.sum(-1)


def count_sequences(labels: torch.Tensor) -> int:
    """Rows with at least one labelled target."""
    return int(((labels[:, 1:] != IGNORE_INDEX).sum(-1) > 0).sum())


@dataclass
class RetainTerm:
    """Keep the retain data: cross-entropy, or KL(reference || model) per retain token."""

    weight: float = 1.0
    kind: str = "ce"  # "ce" | "kl"

    def __call__(self, model, rows: dict, totals: dict, reference=None) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits
        if self.kind == "ce":
            total = token_cross_entropy(logits, rows["labels"])
        else:
            with torch.no_grad():
                ref_logits = reference(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits
            mask = rows["labels"][:, 1:] != IGNORE_INDEX
            ref_logp = torch.log_softmax(ref_logits[:, :-1].float(), -1)
            logp = torch.log_softmax(logits[:, :-1].float(), -1)
            total = ((ref_logp.exp() * (ref_logp - logp)).sum(-1) * mask).sum()
        return self.weight * total / max(totals["retain"], 1.0), total.detach()


class UnlearnObjective(abc.ABC):
    """Base of the methods: counts per term, a retain term, all parameters trainable."""

    def __init__(self, hp, reference=None, config=None):
        self.hp = hp
        self.reference = reference
        self.retain = RetainTerm(hp.retain_weight, getattr(hp, "retain_loss", "ce"))
        if self.uses_reference(hp) and reference is None:
            raise ValueError(f"{type(self).__module__} needs a frozen reference model")

    @staticmethod
    def uses_reference(hp) -> bool:
        """Whether the method reads a frozen copy of the starting model."""
        return False

    @staticmethod
    def validate(hp, config) -> None:
        """Refuse settings that cannot work with this model (ValueError naming the value)."""
        return None  # nothing to check by default

    def count(self, batch: dict) -> dict[str, int]:
        return {"forget": count_targets(batch["forget"]["labels"]),
                "forget_seqs": count_sequences(batch["forget"]["labels"]),
                "retain": count_targets(batch["retain"]["labels"])}

    def select_trainable(self, model) -> None:  # noqa: B027 (a default, not an abstract hook)
        """Which parameters the method trains: all of them, unless a method says otherwise."""
        model.requires_grad_(True)

    @abc.abstractmethod
    def forget_loss(self, model, rows: dict, totals: dict) -> tuple[torch.Tensor, dict]:
        """The method's forget term (a share of the step's loss) and its raw sums for logging."""

    def __call__(self, model, batch, totals):
        forget, parts = self.forget_loss(model, batch["forget"], totals)
        retain, retain_sum = self.retain(model, batch["retain"], totals, self.reference)
        return forget + retain, {**parts, "retain": retain_sum}


def decoder_layers(model):
    """The list of transformer blocks of a Hugging Face causal LM (DeepSpeed engine or bare)."""
    base = getattr(model, "module", model)
    inner = getattr(base, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(base).__name__} has no model.layers: cannot locate its residual stream")
    return layers


@contextlib.contextmanager
def capture_output(module):
    """Record a module's forward output (its residual stream) while inside the block; the hook is
    removed on exit, also when the forward raises."""
    store: dict = {}

    def hook(_module, _inputs, output):
        store["out"] = output[0] if isinstance(output, tuple) else output

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()
