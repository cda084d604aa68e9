"""One arithmetic problem per row, `<bos> prompt " answer" <eos>`: unlearning and relearning data.

`problem_row` builds a row, labelled on every token (plain language-model data) or on the answer only.
`ProblemRows` is a map-style dataset of such rows over chosen operations; item i is a pure function of
(seed, i). The relearning attack fine-tunes on it: plain cross-entropy on forget-domain problems.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from distill.data import IGNORE_INDEX
from unlearn.tasks.arithmetic import Problem, parse_ops, sample_problem
from unlearn.tasks.tokenizer import BOS_TOKEN, EOS_TOKEN, char_to_id_map, encode_chars


class RowEncoder:
    """Token rows of problems for one tokenizer (its char map and special ids looked up once)."""

    def __init__(self, tokenizer):
        self._char_ids = char_to_id_map(tokenizer)
        vocab = tokenizer.get_vocab()
        self._bos, self._eos = vocab[BOS_TOKEN], vocab[EOS_TOKEN]

    def __call__(self, p: Problem, answer_only: bool) -> dict[str, torch.Tensor]:
        prompt = [self._bos] + encode_chars(self._char_ids, p.prompt)
        answer = encode_chars(self._char_ids, p.text[len(p.prompt):]) + [self._eos]
        ids = torch.tensor(prompt + answer, dtype=torch.long)
        labels = ids.clone()
        if answer_only:
            labels[: len(prompt)] = IGNORE_INDEX
        return {"input_ids": ids, "labels": labels}


def draw_problem(rng: np.random.Generator, ops: tuple[str, ...], word_fraction: float) -> Problem:
    op = ops[int(rng.integers(len(ops)))]
    fmt = "word" if rng.random() < word_fraction else "equation"
    return sample_problem(rng, op, fmt, "train")


def check_fraction(word_fraction: float) -> None:
    if not 0.0 <= word_fraction <= 1.0:
        raise ValueError(f"word_fraction must be in [0, 1], got {word_fraction}")


class ProblemRows(Dataset):
    def __init__(self, tokenizer, ops: str | Iterable[str], num_items: int, seed: int,
                 word_fraction: float = 0.0, answer_only: bool = False):
        self.ops = parse_ops(ops)
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        check_fraction(word_fraction)
        self.num_items, self.seed = num_items, seed
        self.word_fraction, self.answer_only = word_fraction, answer_only
        self._encode = RowEncoder(tokenizer)

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.num_items:
            raise IndexError(f"item index {i} out of range [0, {self.num_items})")
        rng = np.random.default_rng([self.seed, int(i)])
        return self._encode(draw_problem(rng, self.ops, self.word_fraction), self.answer_only)
