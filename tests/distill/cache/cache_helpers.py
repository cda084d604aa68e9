"""Shared by the cache tests: small caches written in-process from real or synthetic targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distill.cache import CachePlan, CacheWriter, make_plan, prepare
from distill.cache.precompute import PrecomputeOptions

REAL = Path(__file__).resolve().parents[2] / "data" / "gemma3-270m-top64.npz"  # tests/data/README.md


def real_rows() -> dict[str, np.ndarray]:
    """The real Gemma-3-270M top-64 outputs: 2048 positions = 4 records of 512."""
    d = np.load(REAL, allow_pickle=False)
    return {"input_ids": d["token_ids"].astype(np.int64), "topk_ids": d["topk_ids"].astype(np.int64),
            "topk_logprobs": d["topk_logprobs"], "logsumexp": d["logsumexp"]}


def random_rows(records: int, seq_len: int, vocab: int, k: int, seed: int = 0, samples: int | None = None):
    """Targets of a random peaked 'teacher': topk rows, or sampled rows when `samples` is given."""
    g = torch.Generator().manual_seed(seed)
    n = records * seq_len
    logits = torch.randn(n, vocab, generator=g) * 3
    rows = {"input_ids": torch.randint(0, vocab, (n,), generator=g).numpy()}
    if samples:
        rows["sample_ids"] = torch.multinomial(torch.softmax(logits, -1), samples, replacement=True,
                                               generator=g).numpy()
        return rows
    lse = torch.logsumexp(logits, -1)
    top, idx = torch.topk(logits, k, -1)
    rows.update(topk_ids=idx.numpy(), topk_logprobs=(top - lse[:, None]).numpy(), logsumexp=lse.numpy())
    return rows


def plan_for(rows: dict, seq_len: int, vocab: int, records_per_shard: int, chunk_records: int,
             mode: str = "topk", width: int = 8, dataset: str = "ds", tokenizer: str = "tok") -> CachePlan:
    options = PrecomputeOptions(mode=mode, k=width if mode == "topk" else None,
                                samples=width if mode == "sampled" else None, records_per_shard=records_per_shard,
                                chunk_records=chunk_records)
    return make_plan(options, teacher="teacher", tokenizer=tokenizer, dataset=dataset, description={"test": True},
                     vocab_size=vocab, seq_len=seq_len, records=len(rows["input_ids"]) // seq_len)


def shard_rows(plan: CachePlan, rows: dict, j: int) -> dict:
    part = plan.shard_records(j)
    return {k: v[part.start * plan.seq_len: part.stop * plan.seq_len] for k, v in rows.items()}


def write_cache(cache: Path, plan: CachePlan, rows: dict, shards=None, commit: bool = True):
    """Write the given shards (default all) of `rows` into `cache`; commit the manifest if asked."""
    prepare(cache, plan)
    writer = CacheWriter(cache, plan)
    shards = range(plan.num_shards) if shards is None else shards
    entries = [writer.write(j, shard_rows(plan, rows, j)) for j in shards]
    if commit:
        writer.commit(entries)
    return entries


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}
