"""RMU (representation misdirection): scramble one layer's residual stream on forget data.

    L = mean_forget ||h_l(x) - c * u||^2 / H  +  alpha * mean_retain ||h_l(x) - h_l^frozen(x)||^2 / H

u is a fixed random unit vector, h_l the output of decoder layer `layer` (the residual stream), H the
hidden size. Only the MLP down-projections of `trainable_layers` are trained. Forget positions are
those that predict the answer (a causal model cannot tell a forget prompt from a retain prompt before
it has read the operator, so steering the shared prefix would fight the retain term); retain
positions are every non-padding token. c must suit the model's residual-stream norm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from distill.data import IGNORE_INDEX
from distill.knobs import knob, non_negative, positive, valid_regex
from distill.objective import count_targets
from unlearn.methods.common import UnlearnObjective, capture_output, count_sequences, decoder_layers
from unlearn.methods.terms import run_terms


@dataclass
class Hparams:
    layer: int = knob(2, "decoder layer whose activations are steered", check=non_negative)
    # c: about twice the tiny model's residual norm at layer 2 (~29)
    coeff: float = knob(60.0, "c: norm of the random target activation", check=positive)
    retain_weight: float = knob(50.0, "alpha: weight of the retain term", check=non_negative)
    trainable_layers: str = knob("0,1,2", "comma-separated decoder layer indices")
    param_pattern: str = knob("mlp.down_proj", "regex of the trained parameters' names", check=valid_regex)
    seed: int = knob(0, "seed of the random target direction u", check=non_negative)


TRAIN_DEFAULTS = dict(steps=60, lr=1e-3, schedule="constant", warmup_steps=0)
PARETO_GRID = ("coeff", (30.0, 60.0, 120.0))  # --pareto: the steering norm c, the default among the values


def parse_layers(spec: str) -> list[int]:
    try:
        return sorted({int(x) for x in str(spec).split(",") if x.strip()})
    except ValueError as e:
        raise ValueError(f"RMU trainable_layers {spec!r}: expected comma-separated integers") from e


class Objective(UnlearnObjective):
    @staticmethod
    def uses_reference(hp) -> bool:
        return True  # the retain term matches the frozen model's activations

    @staticmethod
    def validate(hp, config) -> None:
        depth = config.num_hidden_layers
        for idx in [hp.layer, *parse_layers(hp.trainable_layers)]:
            if not 0 <= idx < depth:
                raise ValueError(f"RMU layer index {idx} is outside the model's {depth} decoder layers "
                                 f"(valid: 0..{depth - 1})")

    def __init__(self, hp: Hparams, reference=None, config=None):
        super().__init__(hp, reference, config)
        self.validate(hp, config)
        g = torch.Generator().manual_seed(hp.seed)
        u = torch.rand(config.hidden_size, generator=g)
        self.target = hp.coeff * u / u.norm()

    def count(self, batch):
        return {"forget": count_targets(batch["forget"]["labels"]),
                "forget_seqs": count_sequences(batch["forget"]["labels"]),
                "retain": int(batch["retain"]["attention_mask"].sum())}

    def select_trainable(self, model) -> None:
        layers = parse_layers(self.hp.trainable_layers)
        wanted = re.compile(r"(^|\.)layers\.(" + "|".join(map(str, layers)) + r")\." + re.escape(self.hp.param_pattern))
        chosen = [n for n, p in model.named_parameters() if wanted.search(n)]
        if not chosen:
            raise ValueError(f"RMU: no parameter matches layers {layers} and pattern {self.hp.param_pattern!r}")
        for name, param in model.named_parameters():
            param.requires_grad_(name in chosen)

    def _activations(self, model, rows) -> torch.Tensor:
        with capture_output(decoder_layers(model)[self.hp.layer]) as store:
            run_terms(model, rows, lambda t: None)  # with the fused head: the decoder alone, no logits
        return store["out"].float()

    def forget_loss(self, model, rows, totals):
        h = self._activations(model, rows)[:, :-1]
        mask = rows["labels"][:, 1:] != IGNORE_INDEX
        total = (((h - self.target.to(h.device)) ** 2).mean(-1) * mask).sum()
        return total / max(totals["forget"], 1.0), {"forget": total.detach()}

    def __call__(self, model, batch, totals):
        forget, parts = self.forget_loss(model, batch["forget"], totals)
        rows = batch["retain"]
        h = self._activations(model, rows)
        with torch.no_grad():
            h_ref = self._activations(self.reference, rows)
        mask = rows["attention_mask"].bool()
        total = (((h - h_ref) ** 2).mean(-1) * mask).sum()
        retain = self.hp.retain_weight * total / max(totals["retain"], 1.0)
        return forget + retain, {**parts, "retain": total.detach()}
