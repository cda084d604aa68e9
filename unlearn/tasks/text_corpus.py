"""Text corpora through Hugging Face `datasets`: load, split, tokenise once, pack into rows or keep documents.

A corpus is a file, a glob of files (json / jsonl, parquet, csv, plain text: one builder for all of
them), or a directory written by `Dataset.save_to_disk`. Plain text files give one document per
paragraph (blank-line separated), in the field "text"; the others read `text_field`.

Tokenising is a batched `map` with an explicit fingerprint (the corpus's, the tokenizer's and the
settings'), so a second run reuses the `datasets` cache instead of tokenising again. The first process
to take a file lock beside the cache tokenises; the others, on this node or any node sharing the cache,
wait and then read its result. Each document becomes `[bos] ids eos` (bos where the tokenizer has one).

Packing concatenates the documents in corpus order and cuts the stream into rows of `seq_len` tokens,
dropping the last partial row, as the Hugging Face causal-LM examples do; it runs on the per-document
lengths after the map, so the rows do not depend on the number of map processes or of ranks.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from distill.errors import UserError

BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text", ".text": "text",
            ".md": "text"}
TOKENISE_VERSION = 1  # part of the map fingerprint: bump when the tokenising function changes


def corpus_files(spec: str, flag: str) -> list[str]:
    """The files a corpus spec names (a file or a glob), all of one builder; UserError otherwise."""
    files = sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        raise UserError(f"{flag} {spec}: no such file (expected a json/jsonl, parquet, csv or text file, a glob of "
                        "them, or a directory written by Dataset.save_to_disk)")
    kinds = {BUILDERS.get(Path(f).suffix.lower()) for f in files}
    if None in kinds:
        odd = [f for f in files if Path(f).suffix.lower() not in BUILDERS]
        raise UserError(f"{flag} {spec}: cannot read {odd[0]} (expected one of {', '.join(sorted(BUILDERS))})")
    if len(kinds) > 1:
        raise UserError(f"{flag} {spec}: mixes file kinds {sorted(kinds)}; give one kind per corpus")
    if all(os.path.getsize(f) == 0 for f in files):
        raise UserError(f"{flag} {spec}: the corpus is empty ({len(files)} file(s) of 0 bytes)")
    return files


def load_corpus(spec: str, text_field: str, flag: str):
    """The corpus as a `datasets.Dataset` with one column, "text"; UserError for a missing, empty or
    unreadable corpus or a missing field."""
    import datasets

    path, builder = Path(spec), None
    try:
        if path.is_dir():
            if not (path / "state.json").is_file():
                raise UserError(f"{flag} {spec} is a directory but not one written by Dataset.save_to_disk "
                                "(no state.json); name its files or a glob instead")
            ds = datasets.load_from_disk(str(path))
            field = text_field
        else:
            files = corpus_files(spec, flag)
            builder = BUILDERS[Path(files[0]).suffix.lower()]
            kwargs = {"sample_by": "paragraph"} if builder == "text" else {}
            ds = datasets.load_dataset(builder, data_files=files, split="train", **kwargs)
            field = "text" if builder == "text" else text_field
    except UserError:
        raise
    except Exception as e:  # the builders raise many kinds (ArrowInvalid, DatasetGenerationError, ...)
        cause = e.__cause__ or e
        if isinstance(cause, UnicodeDecodeError):
            raise UserError(f"{flag} {spec}: not UTF-8 text ({cause.reason} at byte {cause.start})") from e
        raise UserError(f"{flag} {spec}: could not be read: {type(cause).__name__}: {cause}") from e
    if isinstance(ds, datasets.DatasetDict):
        raise UserError(f"{flag} {spec}: holds several splits ({', '.join(ds)}); save one split")
    if field not in ds.column_names:
        raise UserError(f"{flag} {spec}: no field {field!r} (fields: {', '.join(ds.column_names)}); "
                        "choose one with --text-field")
    ds = ds.select_columns([field])
    if field != "text":
        ds = ds.rename_column(field, "text")
    if builder == "text":
        # a paragraph keeps the newlines around it; the document is what lies between them
        ds = ds.map(lambda batch: {"text": [t.strip() for t in batch["text"]]}, batched=True,
                    desc=f"trimming paragraphs of {flag}")
    ds = ds.filter(lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True,
                   desc=f"dropping empty documents of {flag}")
    if len(ds) == 0:
        raise UserError(f"{flag} {spec}: the corpus is empty (no non-blank text in field {field!r})")
    return ds


def split_corpus(ds, eval_fraction: float, seed: int):
    """(train, held-out) documents: a seeded split, at least one document on each side."""
    if len(ds) < 2:
        raise UserError(f"a corpus of {len(ds)} document cannot give both training and held-out text; "
                        "give more documents or a separate held-out corpus")
    n_eval = min(max(1, round(eval_fraction * len(ds))), len(ds) - 1)
    parts = ds.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def tokenizer_fingerprint(tokenizer) -> str:
    """The cache's tokenizer fingerprint (vocabulary, special tokens) plus the full tokenizer definition
    (merges, normalisation) where the tokenizer is a fast one: both decide the ids."""
    from distill.cache.fingerprint import tokenizer_fingerprint as fp

    backend = getattr(tokenizer, "backend_tokenizer", None)
    full = hashlib.sha256(backend.to_str().encode()).hexdigest() if backend is not None else ""
    return f"{fp(tokenizer)}:{full}"


def tokenize(ds, tokenizer, num_proc: int | None = None, what: str = "corpus"):
    """Column "input_ids": `[bos] ids eos` per document; cached by fingerprint, tokenised by one process first."""
    from filelock import FileLock

    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no eos token: documents could not be separated")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    fingerprint = hashlib.sha256(json.dumps([ds._fingerprint, tokenizer_fingerprint(tokenizer), bos, eos,
                                             TOKENISE_VERSION]).encode()).hexdigest()[:32]

    def encode(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [([] if bos is None else [bos]) + x + [eos] for x in ids]}

    lock_dir = Path(ds.cache_files[0]["filename"]).parent if ds.cache_files else Path(os.environ.get(
        "HF_DATASETS_CACHE", Path.home() / ".cache" / "huggingface" / "datasets"))
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f"undo-tokenize-{fingerprint}.lock")):
        return ds.map(encode, batched=True, num_proc=num_proc, remove_columns=ds.column_names,
                      new_fingerprint=fingerprint, desc=f"tokenising {what}")


class PackedRows(Dataset):
    """Rows of `seq_len` tokens cut from the concatenated documents of a tokenised corpus (module doc).

    Row i is ``{"input_ids", "labels"}`` with labels == input_ids; `fingerprint` names the corpus, the
    tokenisation and the row length (a logit cache records it)."""

    def __init__(self, tokenised, seq_len: int, what: str = "corpus"):
        if seq_len < 2:
            raise UserError(f"--seq-len must be >= 2, got {seq_len}")
        self.docs, self.seq_len = tokenised, seq_len
        lengths = np.fromiter((len(x) for x in tokenised["input_ids"]), dtype=np.int64, count=len(tokenised))
        self.starts = np.concatenate([[0], np.cumsum(lengths)])  # document j spans starts[j]:starts[j+1]
        self.tokens = int(self.starts[-1])
        self.num_rows = self.tokens // seq_len
        if self.num_rows == 0:
            raise UserError(f"{what}: {len(tokenised)} documents of {self.tokens} tokens in all do not fill one "
                            f"row of {seq_len} tokens")
        self.fingerprint = f"{tokenised._fingerprint}:seq{seq_len}"

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row index {i} out of range [0, {self.num_rows})")
        lo, hi = i * self.seq_len, (i + 1) * self.seq_len
        first = int(np.searchsorted(self.starts, lo, side="right")) - 1
        last = int(np.searchsorted(self.starts, hi, side="left"))  # exclusive
        pieces = self.docs[first:last]["input_ids"]
        stream = np.concatenate([np.asarray(p, dtype=np.int64) for p in pieces])
        offset = lo - int(self.starts[first])
        ids = torch.from_numpy(stream[offset:offset + self.seq_len].copy())
        return {"input_ids": ids, "labels": ids.clone()}


class DocumentRows(Dataset):
    """One document per row, truncated to `seq_len` tokens (not packed): what per-sequence losses need."""

    def __init__(self, tokenised, seq_len: int):
        self.docs, self.seq_len = tokenised, seq_len

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self.docs[int(i)]["input_ids"][: self.seq_len], dtype=torch.long)
        return {"input_ids": ids, "labels": ids.clone()}
