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

from distill.data import IGNORE_INDEX
from unlearn.tasks.arithmetic import Problem, parse_ops, sample_problem
from unlearn.tasks.tokenizer import BOS_TOKEN, EOS_TOKEN, char_to_id_map, encode_chars


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
        if not 0.0 <= word_fraction <= 1.0:
            raise ValueError(f"word_fraction must be in [0, 1], got {word_fraction}")
        self.num_items, self.seed, self.word_fraction = num_items, seed, word_fraction
        self._char_ids = char_to_id_map(tokenizer)
        vocab = tokenizer.get_vocab()
        self._bos, self._eos = vocab[BOS_TOKEN], vocab[EOS_TOKEN]

    def __len__(self) -> int:
        return self.num_items

    def _problem(self, rng: np.random.Generator, ops: tuple[str, ...]) -> Problem:
        op = ops[int(rng.integers(len(ops)))]
        fmt = "word" if rng.random() < self.word_fraction else "equation"
        return sample_problem(rng, op, fmt, "train")

    def _row(self, p: Problem, answer_only: bool) -> dict[str, torch.Tensor]:
        prompt = [self._bos] + encode_chars(self._char_ids, p.prompt)
        answer = encode_chars(self._char_ids, p.text[len(p.prompt):]) + [self._eos]
        ids = torch.tensor(prompt + answer, dtype=torch.long)
        labels = ids.clone()
        if answer_only:
            labels[: len(prompt)] = IGNORE_INDEX
        return {"input_ids": ids, "labels": labels}

    def __getitem__(self, i: int) -> dict[str, dict[str, torch.Tensor]]:
        if not 0 <= i < self.num_items:
            raise IndexError(f"item index {i} out of range [0, {self.num_items})")
        rng = np.random.default_rng([self.seed, int(i)])
        forget = self._problem(rng, self.forget_ops)
        retain = self._problem(rng, self.retain_ops)
        return {"forget": self._row(forget, answer_only=True), "retain": self._row(retain, answer_only=False)}
