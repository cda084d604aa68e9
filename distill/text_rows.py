"""Fixed-length token rows packed from text: a small, real-text dataset for a real tokenizer.

Documents are tokenized one by one (no special tokens added by the tokenizer), each wrapped as
``<bos> text <eos>`` (bos only where the tokenizer has one), concatenated, and cut into rows of
``seq_len`` tokens; the last partial row is dropped, so every row is full and needs no padding (the
logit cache requires equal-length records); `max_rows` keeps only the first rows. Row ``i`` is
``{"input_ids", "labels"}`` like `unlearn.tasks.arithmetic.PackedArithmeticDataset`'s, with
``labels == input_ids`` (the model shifts).

`project_texts` gives the text this repository carries everywhere: README.md and the module docstrings
of the packages' Python files (about 18,000 Gemma-3 tokens in all).
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "unlearn")


def project_texts(root: str | Path = REPO) -> list[tuple[str, str]]:
    """(name, text) documents: README.md, then every module docstring under the packages, in path order."""
    root = Path(root)
    docs = []
    readme = root / "README.md"
    if readme.is_file():
        docs.append(("README.md", readme.read_text(encoding="utf-8")))
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
            if doc:
                docs.append((path.relative_to(root).as_posix(), doc))
    if not docs:
        raise ValueError(f"{root} holds no README.md and no documented modules under {', '.join(PACKAGES)}")
    return docs


def pack_documents(token_lists: Sequence[Sequence[int]], seq_len: int, bos_id: int | None,
                   eos_id: int) -> torch.Tensor:
    """(rows, seq_len) int64: ``[bos] doc eos`` for each document, concatenated and cut; the rest dropped."""
    stream: list[int] = []
    for ids in token_lists:
        stream.extend(([] if bos_id is None else [bos_id]) + list(ids) + [eos_id])
    rows = len(stream) // seq_len
    return torch.tensor(stream[: rows * seq_len], dtype=torch.long).reshape(rows, seq_len)


class TextRowsDataset(Dataset):
    """Map-style rows of `seq_len` tokens packed from `documents` ((name, text) pairs); see the module doc."""

    def __init__(self, tokenizer, documents: Sequence[tuple[str, str]], seq_len: int, max_rows: int | None = None):
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        if max_rows is not None and max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token: documents could not be separated")
        self.seq_len, self.names = seq_len, [name for name, _ in documents]
        token_lists = [tokenizer(text, add_special_tokens=False)["input_ids"] for _, text in documents]
        self.tokens = sum(len(ids) for ids in token_lists)  # before bos/eos and the cut
        self.rows = pack_documents(token_lists, seq_len, tokenizer.bos_token_id, tokenizer.eos_token_id)[:max_rows]
        if len(self.rows) == 0:
            raise ValueError(f"{len(documents)} documents of {self.tokens} tokens do not fill one row of "
                             f"{seq_len} tokens")
        # What the rows hold, for a cache's dataset fingerprint: edits to any document change it.
        self.text_sha256 = hashlib.sha256("\0".join(f"{n}\0{t}" for n, t in documents).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self.rows):
            raise IndexError(f"row index {i} out of range [0, {len(self.rows)})")
        ids = self.rows[i].clone()
        return {"input_ids": ids, "labels": ids.clone()}

    def description(self) -> dict:
        """A stable JSON description (e.g. `run_precompute`'s `description`)."""
        return {"kind": "text-rows", "documents": len(self.names), "text_sha256": self.text_sha256,
                "seq_len": self.seq_len, "rows": len(self.rows)}
