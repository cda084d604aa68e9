"""What every unlearning method shares: the batch layout, the retain term, the trained parameters.

A batch is {"forget": rows, "retain": rows}; forget rows are labelled on the answer tokens only,
retain rows on every token (see `unlearn.tasks.forget_retain`). Every term is a sum over its own
targets divided by the number of those targets in the whole optimizer step (`totals`), so the
result does not depend on the number of ranks or accumulation steps. The model (and the reference)
is a `unlearn.methods.terms.TermsModel`: terms come from its logits or its fused head alike.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass

import torch

from distill.data import IGNORE_INDEX
from distill.objective import count_targets
from unlearn.methods.terms import TermsModel, causal_lm_of, run_terms


def count_sequences(labels: torch.Tensor) -> int:
    """Rows with at least one labelled target."""
    return int(((labels[:, 1:] != IGNORE_INDEX).sum(-1) > 0).sum())


@dataclass
class RetainTerm:
    """Keep the retain data: cross-entropy, or KL(reference || model) per retain token."""

    weight: float = 1.0
    kind: str = "ce"  # "ce" | "kl"

    def __call__(self, model, rows: dict, totals: dict, reference=None) -> tuple[torch.Tensor, torch.Tensor]:
        labels = rows["labels"]
        if self.kind == "ce":
            total = run_terms(model, rows, lambda t: t.nll(labels))
        else:
            with torch.no_grad():
                teacher = run_terms(reference, rows, lambda t: t.as_teacher())
            total = run_terms(model, rows, lambda t: t.kl_from(teacher, labels, reference))
        return self.weight * total / max(totals["retain"], 1.0), total.detach()


class UnlearnObjective(abc.ABC):
    """Base of the methods: counts per term, a retain term, all parameters trainable."""

    fused = False  # terms through the fused head (set by `unlearn.methods.build_objective`)

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

    def wrap(self, causal_lm) -> TermsModel:
        """The model as the method trains it: called with terms=, on its logits or its fused head."""
        return TermsModel(causal_lm, self.fused)

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
    """The list of transformer blocks of a Hugging Face causal LM (DeepSpeed engine, TermsModel or bare)."""
    base = causal_lm_of(model)
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
