"""Paired forget / retain examples for unlearning, one problem per row.

Item i is a pure function of (seed, i): {"forget": row, "retain": row}, each row
`<bos> prompt " answer" <eos>`. Forget rows are labelled on the answer only (what an unlearning
method suppresses is the answer, not the operands it is asked about); retain rows are labelled on
every token, as in pretraining, so the retain term keeps the model's whole language ability.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from unlearn.tasks.arithmetic import parse_ops
from unlearn.tasks.problem_rows import RowEncoder, check_fraction, draw_problem


class ForgetRetainDataset(Dataset):
    def __init__(self, tokenizer, forget_ops: str | Iterable[str], retain_ops: str | Iterable[str],
                 num_items: int, seed: int, word_fraction: float = 0.05):
        self.forget_ops = parse_ops(forget_ops)
        self.retain_ops = parse_ops(retain_ops)
        if set(self.forget_ops) & set(self.retain_ops):
            shared = " ".join(sorted(set(self.forget_ops) & set(self.retain_ops)))
            raise ValueError(f"forget ops {' '.join(self.forget_ops)} and retain ops {' '.join(self.retain_ops)} "
                             f"overlap ({shared}): forget and retain data must be disjoint")
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        check_fraction(word_fraction)
        self.num_items, self.seed, self.word_fraction = num_items, seed, word_fraction
        self._row = RowEncoder(tokenizer)

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, i: int) -> dict[str, dict[str, torch.Tensor]]:
        if not 0 <= i < self.num_items:
            raise IndexError(f"item index {i} out of range [0, {self.num_items})")
        rng = np.random.default_rng([self.seed, int(i)])
        forget = draw_problem(rng, self.forget_ops, self.word_fraction)
        retain = draw_problem(rng, self.retain_ops, self.word_fraction)
        return {"forget": self._row(forget, answer_only=True), "retain": self._row(retain, answer_only=False)}
