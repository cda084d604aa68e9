"""Synthetic arithmetic task from "Distillation Robustifies Unlearning".

Four operations: addition and subtraction are retained, multiplication and
division are to be forgotten. Every problem comes in two formats:

- "equation": ``"12 + 7 ="``, full text ``"12 + 7 = 19"``;
- "word": a templated word problem ending in ``" Answer:"``, full text
  ``"... Answer: 19"``.

Operand ranges: ``+``/``-`` use a, b in [1, 50] (subtraction reordered so the
result is >= 0); ``*`` uses a, b in [1, 20]; ``/`` draws a, b in [1, 20] and
asks for ``(a*b) / b = a`` so the answer is whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from unlearn.tasks.templates import EVAL_TEMPLATES, ITEMS, NAMES, TRAIN_TEMPLATES
from unlearn.tasks.tokenizer import BOS_TOKEN, EOS_TOKEN, char_to_id_map, encode_chars

OPS: tuple[str, ...] = ("+", "-", "*", "/")
RETAIN_OPS: tuple[str, ...] = ("+", "-")
FORGET_OPS: tuple[str, ...] = ("*", "/")
FORMATS: tuple[str, ...] = ("equation", "word")
SPLITS: tuple[str, ...] = ("train", "eval")

ANSWER_SUFFIX = " Answer:"
_SMALL_MAX = 20  # operand bound for * and /
_LARGE_MAX = 50  # operand bound for + and -


def parse_ops(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Parse ``"+,-"`` or ``["*", "/"]`` into ops in canonical OPS order, deduplicated."""
    pieces = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen = set()
    for piece in pieces:
        op = piece.strip() if isinstance(piece, str) else piece
        if op == "":
            continue  # tolerate stray commas such as "+,-,"
        if op not in OPS:
            raise ValueError(f"unknown operation {op!r}: expected some of {' '.join(OPS)}")
        chosen.add(op)
    if not chosen:
        raise ValueError(f"no operations given in {spec!r}: expected some of {' '.join(OPS)}")
    return tuple(op for op in OPS if op in chosen)


@dataclass(frozen=True)
class Problem:
    """One arithmetic problem.

    ``a`` and ``b`` are the operands in equation order (for division ``a`` is
    the dividend and ``b`` the divisor), so ``answer == a op b`` always.
    """

    op: str
    format: str
    a: int
    b: int
    answer: int
    prompt: str

    @property
    def text(self) -> str:
        """Prompt followed by the answer, as seen in pretraining data."""
        return f"{self.prompt} {self.answer}"


def _sample_operands(rng: np.random.Generator, op: str) -> tuple[int, int, int]:
    """Draw ``(a, b, answer)`` for ``op`` from the task's operand ranges."""
    if op in ("+", "-"):
        x, y = (int(v) for v in rng.integers(1, _LARGE_MAX + 1, size=2))
        if op == "+":
            return x, y, x + y
        a, b = max(x, y), min(x, y)  # keeps the difference non-negative
        return a, b, a - b
    x, y = (int(v) for v in rng.integers(1, _SMALL_MAX + 1, size=2))
    if op == "*":
        return x, y, x * y
    if op == "/":
        return x * y, y, x  # dividend built from the answer, so it divides exactly
    raise ValueError(f"unknown operation {op!r}: expected one of {' '.join(OPS)}")


def _word_prompt(rng: np.random.Generator, op: str, split: str, a: int, b: int) -> str:
    """Fill a random template of ``split`` for ``op``; prompt ends with " Answer:"."""
    templates = TRAIN_TEMPLATES if split == "train" else EVAL_TEMPLATES
    options = templates[op]
    # Always draw name and item, even for templates that use neither, so the
    # number of rng draws per word problem is fixed.
    template = options[int(rng.integers(len(options)))]
    name = NAMES[int(rng.integers(len(NAMES)))]
    item = ITEMS[int(rng.integers(len(ITEMS)))]
    return template.format(a=a, b=b, name=name, item=item) + ANSWER_SUFFIX


def sample_problem(rng: np.random.Generator, op: str, fmt: str, split: str) -> Problem:
    """Sample one problem of operation ``op`` in format ``fmt`` from ``split``.

    ``split`` only selects the word-problem templates ("train" ->
    TRAIN_TEMPLATES, "eval" -> held-out EVAL_TEMPLATES). Equations are drawn
    from the same operand ranges in both splits: the operand space is tiny
    (at most 50 * 50 pairs) and the paper likewise samples evaluation
    equations from the training ranges, so held-out equations would be
    neither feasible nor faithful.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    a, b, answer = _sample_operands(rng, op)
    if fmt == "equation":
        prompt = f"{a} {op} {b} ="
    else:
        prompt = _word_prompt(rng, op, split, a, b)
    return Problem(op=op, format=fmt, a=a, b=b, answer=answer, prompt=prompt)


def eval_problems(ops: str | Iterable[str], n_per_format: int = 100, seed: int = 1234) -> list[Problem]:
    """Deterministic evaluation set: ``len(ops) * 2 * n_per_format`` problems.

    Ordered by op (canonical order), then ``n_per_format`` equations followed by
    ``n_per_format`` word problems (held-out templates). Each op has its own rng
    stream seeded by ``(seed, op index)`` so an op's problems do not depend on
    which other ops are requested.
    """
    if n_per_format < 1:
        raise ValueError(f"n_per_format must be >= 1, got {n_per_format}")
    problems: list[Problem] = []
    for op in parse_ops(ops):
        rng = np.random.default_rng([seed, OPS.index(op)])
        for fmt in FORMATS:
            problems.extend(sample_problem(rng, op, fmt, "eval") for _ in range(n_per_format))
    return problems


class PackedArithmeticDataset(Dataset):
    """Pretraining rows of packed ``<bos> text <eos>`` problems.

    Row ``i`` is a pure function of ``(seed, i)``: problems (op uniform over
    ``ops``, word format with probability ``word_fraction``, train templates)
    are concatenated until the row reaches ``seq_len`` tokens, then truncated.
    Items are ``{"input_ids": LongTensor[seq_len], "labels": LongTensor[seq_len]}``
    with ``labels == input_ids`` (the model shifts internally).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        ops: str | Iterable[str],
        seq_len: int,
        num_rows: int,
        seed: int,
        word_fraction: float = 0.2,
    ) -> None:
        if seq_len < 16:
            raise ValueError(f"seq_len must be >= 16, got {seq_len}")
        if num_rows < 0:
            raise ValueError(f"num_rows must be >= 0, got {num_rows}")
        if not 0.0 <= word_fraction <= 1.0:
            raise ValueError(f"word_fraction must be in [0, 1], got {word_fraction}")
        self.ops = parse_ops(ops)
        self.seq_len = seq_len
        self.num_rows = num_rows
        self.seed = seed
        self.word_fraction = word_fraction
        # Cache the char map once: calling the HF tokenizer per problem is slow.
        self._char_ids = char_to_id_map(tokenizer)
        vocab = tokenizer.get_vocab()
        self._bos_id = vocab[BOS_TOKEN]
        self._eos_id = vocab[EOS_TOKEN]

    def __len__(self) -> int:
        return self.num_rows

    def _sample_row_ids(self, rng: np.random.Generator) -> list[int]:
        """Concatenate ``<bos> text <eos>`` problems until >= seq_len tokens."""
        ids: list[int] = []
        while len(ids) < self.seq_len:
            op = self.ops[int(rng.integers(len(self.ops)))]
            fmt = "word" if rng.random() < self.word_fraction else "equation"
            problem = sample_problem(rng, op, fmt, "train")
            ids.append(self._bos_id)
            ids.extend(encode_chars(self._char_ids, problem.text))
            ids.append(self._eos_id)
        return ids[: self.seq_len]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row index {i} out of range [0, {self.num_rows})")
        rng = np.random.default_rng([self.seed, int(i)])
        input_ids = torch.tensor(self._sample_row_ids(rng), dtype=torch.long)
        return {"input_ids": input_ids, "labels": input_ids.clone()}


_INT_RE = re.compile(r"-?[0-9]+")


def parse_answer(generated: str) -> int | None:
    """First whitespace-separated token of ``generated`` as an int, else None.

    Strict: only an optional minus and ASCII digits count (``int`` alone would
    also accept "+5", "1_0" or non-ASCII digits), e.g. " 19 " -> 19,
    " 1 9" -> 1, "19." -> None, "" -> None.
    """
    tokens = generated.split()
    if not tokens or not _INT_RE.fullmatch(tokens[0]):
        return None
    return int(tokens[0])
