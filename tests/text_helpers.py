"""Small text corpora and a real subword tokenizer, made by the tests themselves (no download).

Retain text is English-like sentences, forget text Korean-like sentences (Hangul syllables), both drawn
from fixed word lists by a seeded generator; the tokenizer is a byte-level BPE trained on both with
`tokenizers`, saved as a Hugging Face tokenizer directory. A plain module (tests/ is on sys.path
through its conftest), shared by tests/unlearn/tasks and tests/launch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ENGLISH = ("the model keeps what it learned about numbers and words while a small team writes careful notes "
           "on every run before the next step begins again with fresh data from the shared folder").split()
KOREAN = [chr(0xAC00 + 28 * i + j) + chr(0xAC00 + 588 * j + 7 * i) for i in range(12) for j in range(3)]


def sentences(words, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(6, 20))
        out.append(" ".join(words[int(i)] for i in rng.integers(0, len(words), k)) + ".")
    return out


def documents(words, n: int, seed: int) -> list[str]:
    """n documents of 1-4 sentences."""
    rng = np.random.default_rng(seed + 1000)
    pool = sentences(words, 4 * n, seed)
    return [" ".join(pool[4 * i: 4 * i + int(rng.integers(1, 5))]) for i in range(n)]


def write_jsonl(path: Path, texts, field: str = "text") -> Path:
    path.write_text("".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


def write_parquet(path: Path, texts, field: str = "text") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({field: list(texts)}), path)
    return path


def write_text(path: Path, texts) -> Path:
    """Plain text: documents separated by blank lines (one paragraph each)."""
    path.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    return path


def train_tokenizer(path: Path, texts, vocab_size: int = 400, pad: bool = True) -> Path:
    """A byte-level BPE trained on `texts`, saved as a Hugging Face tokenizer directory at `path`."""
    from unlearn.subword import train_tokenizer as train

    return train(texts, path, vocab_size, pad)


def make_corpora(root: Path, n_docs: int = 60) -> dict[str, Path]:
    """English (retain) and Korean (forget) corpora as jsonl, a 50/50 mix as parquet, and a tokenizer."""
    root.mkdir(parents=True, exist_ok=True)
    english, korean = documents(ENGLISH, n_docs, seed=1), documents(KOREAN, n_docs, seed=2)
    mix = [d for pair in zip(english, korean) for d in pair]
    return {"retain": write_jsonl(root / "english.jsonl", english),
            "forget": write_jsonl(root / "korean.jsonl", korean),
            "mix": write_parquet(root / "mix.parquet", mix),
            "tokenizer": train_tokenizer(root / "tokenizer", english + korean)}
