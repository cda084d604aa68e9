"""Compute a teacher's targets for a whole dataset into a cache, on every rank at once.

    deepspeed --num_gpus 8 launch/precompute.py --ds_config ds_configs/zero3.json --teacher T --out C

Who computes what. Shard j holds records [j*R, (j+1)*R) and belongs to global rank j % world_size:
the shards, their boundaries and their bytes never depend on the world size, only who writes them.
Each rank runs its shards in micro-batches of records that never straddle a shard, so every record
is computed in the same batch shape whatever the world size. Shards already complete on disk (from
a killed run) are checked and kept. Under ZeRO-3 every forward is a collective (each layer's
parameters are gathered from all ranks), so ranks with less left to do run dummy forwards until all
have run the same number.

The teacher is a DeepSpeed engine with no optimizer, built partitioned (`build_model` under the
ZeRO-3 config), in eval mode under no_grad. Encoding and writing a shard happen in a background
thread while the next shard's forwards run.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist
from tqdm import tqdm

from distill import dist
from distill.cache import fingerprint, targets, values
from distill.cache.codec import MODES, TOPK
from distill.cache.manifest import MANIFEST, CachePlan, ShardEntry
from distill.cache.teacher import teacher_forward
from distill.cache.writer import COMPLETE, CacheWriter, prepare
from distill.errors import UserError
from distill.knobs import at_least_one, check_knobs, knob, positive

Forward = Callable[[torch.Tensor], torch.Tensor]  # input_ids (B, T) int64 -> logits (B, T, V)


@dataclass
class PrecomputeStats:
    shards_written: int = 0
    shards_kept: int = 0  # complete shards of an earlier, killed run
    forwards: int = 0
    dummy_forwards: int = 0
    forward_s: float = 0.0  # wall time inside the teacher's forward passes
    total_s: float = 0.0
    kept_mass: float = 0.0  # topk: the sum over positions of the probability the k ids hold
    positions: int = 0


def assigned_shards(num_shards: int, rank: int, world_size: int) -> list[int]:
    return list(range(rank, num_shards, world_size))


def micro_batches(records: range, micro_batch: int) -> list[list[int]]:
    return [list(records[i:i + micro_batch]) for i in range(0, len(records), micro_batch)]


def input_batch(dataset, records: list[int], seq_len: int) -> torch.Tensor:
    """(B, T) int64 input ids of the given records; every record must be exactly T tokens."""
    rows = []
    for i in records:
        ids = torch.as_tensor(dataset[i]["input_ids"], dtype=torch.long)
        if ids.shape != (seq_len,):
            raise UserError(f"dataset record {i} has shape {tuple(ids.shape)}; every record must be {seq_len} tokens")
        rows.append(ids)
    return torch.stack(rows)


def shard_targets(plan: CachePlan, logits: torch.Tensor, records: list[int]) -> dict[str, np.ndarray]:
    if plan.mode == TOPK:
        return targets.topk_targets(logits, plan.k, plan.temperature)
    return targets.sampled_targets(logits, plan.samples, plan.temperature, records, plan.sampling_seed)


class _Timed:
    """The teacher's forward, with its wall time counted (synchronised on GPUs)."""

    def __init__(self, forward: Forward, stats: PrecomputeStats):
        self.forward, self.stats = forward, stats

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = self.forward(input_ids)
        if logits.is_cuda:
            torch.cuda.synchronize(logits.device)
        self.stats.forward_s += time.perf_counter() - t0
        self.stats.forwards += 1
        return logits


def _forwards_per_rank(pending_batches: int, rank: int, world_size: int) -> int:
    """The largest number of forwards any rank has to run (an all-reduce of one-hot counts)."""
    counts = torch.zeros(world_size, dtype=torch.float64)
    counts[rank] = pending_batches
    return int(dist.all_reduce_sum(counts).max())


def compute_shards(writer: CacheWriter, dataset, forward: Forward, rank: int = 0, world_size: int = 1,
                   micro_batch: int = 16, show_progress: bool = True) -> tuple[list[ShardEntry], PrecomputeStats]:
    """Compute, encode and write this rank's shards; returns (their entries, kept ones included), stats."""
    plan, stats, t0 = writer.plan, PrecomputeStats(), time.perf_counter()
    timed = _Timed(forward, stats)
    entries, pending = [], []
    for j in assigned_shards(plan.num_shards, rank, world_size):
        kept = writer.existing(j)
        if kept is None:
            pending.append(j)
        else:
            entries.append(kept)
    stats.shards_kept = len(entries)
    work = sum(len(micro_batches(plan.shard_records(j), micro_batch)) for j in pending)
    most = _forwards_per_rank(work, rank, world_size)
    writes: deque = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer") as pool:
        for j in tqdm(pending, desc="precompute", disable=not (show_progress and rank == 0), dynamic_ncols=True):
            parts = []
            for records in micro_batches(plan.shard_records(j), micro_batch):
                input_ids = input_batch(dataset, records, plan.seq_len)
                part = shard_targets(plan, timed(input_ids), records)
                if plan.mode == TOPK:
                    stats.kept_mass += float(np.exp(part["topk_logprobs"].astype(np.float64)).sum())
                    stats.positions += part["topk_logprobs"].shape[0]
                part["input_ids"] = input_ids.reshape(-1).numpy()
                parts.append(part)
            rows = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
            writes.append(pool.submit(writer.write, j, rows))
            while len(writes) > 1:  # at most one shard waits to be written: memory stays bounded
                entries.append(writes.popleft().result())
            stats.shards_written += 1
        dummy = torch.zeros((1, plan.seq_len), dtype=torch.long)
        for _ in range(most - work):
            timed(dummy)
            stats.dummy_forwards += 1
        entries.extend(w.result() for w in writes)
    stats.total_s = time.perf_counter() - t0
    return entries, stats


def gather_entries(entries: list[ShardEntry], world_size: int) -> list[ShardEntry]:
    """Every rank's shard entries, on every rank."""
    if world_size == 1 or not torch_dist.is_initialized():
        return list(entries)
    boxes: list = [None] * world_size
    torch_dist.all_gather_object(boxes, [asdict(e) for e in entries])
    return [ShardEntry(**e) for box in boxes for e in box]


def zstd_level_range(value) -> str | None:
    return None if 1 <= value <= 22 else "must lie in [1, 22]"


# A rank reads whole chunks, so a chunk of several records that straddles two ranks' micro-batches is
# read twice; one record per chunk keeps reads at ~1x the cache on any world size (bench/cache.py:
# read_amplification) for ~4% more bytes than 16-record chunks. Shorter records are grouped up to
# this many tokens, below which zstd frames start to cost more than they save.
CHUNK_TOKENS = 256


@dataclass(frozen=True)
class PrecomputeOptions:
    """What a precompute computes and how it stores it; each field with a help is a flag of
    launch/precompute.py (`distill.knobs`)."""

    mode: str = knob(TOPK, "topk: the k most likely tokens and the exact tail; sampled: draws per position",
                     choices=MODES)
    k: int | None = knob(64, "topk mode: tokens kept per position", flag="--top-k", check=at_least_one)
    samples: int | None = knob(None, "sampled mode: draws per position", check=at_least_one)
    temperature: float = knob(1.0, "targets are softmax(z / temperature) of the teacher's logits", check=positive)
    sampling_seed: int | None = knob(None, "sampled mode: seed of the draws (default 0)")
    micro_batch: int = knob(16, "records per forward pass", check=at_least_one)
    records_per_shard: int | None = knob(None, "records per shard (default: about 128K tokens per shard)",
                                         check=at_least_one)
    chunk_records: int | None = knob(None, "records per compressed chunk, the unit a training rank reads "
                                     f"(default: one record, or enough for {CHUNK_TOKENS} tokens)", check=at_least_one)
    zstd_level: int = knob(9, "zstandard level of the shards", check=zstd_level_range)
    value_step: float = values.DEFAULT_STEP


def make_plan(options: PrecomputeOptions, *, teacher: str, tokenizer: str, dataset: str, description: dict,
              vocab_size: int, seq_len: int, records: int) -> CachePlan:
    """The plan of a precompute; bad option values raise UserError naming the option."""
    o = options
    check_knobs(o)  # sizes, temperature, zstd level: the checks the flags declare
    per_shard = o.records_per_shard or max(1, (1 << 17) // seq_len)
    per_chunk = min(o.chunk_records or -(-CHUNK_TOKENS // seq_len), per_shard)
    if o.mode == TOPK and not (o.k and 1 <= o.k <= vocab_size):
        raise UserError(f"--top-k {o.k} must lie in [1, {vocab_size}] (the teacher's vocabulary)")
    if o.mode != TOPK and not (o.samples and 1 <= o.samples <= 65535):
        raise UserError(f"--samples {o.samples} must lie in [1, 65535]")
    topk = o.mode == TOPK
    try:
        return CachePlan(
            mode=o.mode, k=o.k if topk else None, samples=None if topk else o.samples, temperature=float(o.temperature),
            sampling_seed=None if topk else int(o.sampling_seed or 0), vocab_size=vocab_size, seq_len=seq_len,
            records=records, records_per_shard=per_shard, chunk_records=per_chunk, teacher=teacher,
            tokenizer=tokenizer, dataset=dataset, dataset_description=description,
            value_step=o.value_step if topk else None,
            levels_sha256=values.levels_digest(values.value_levels(o.value_step)) if topk else None,
            zstd_level=o.zstd_level)
    except ValueError as e:
        raise UserError(f"precompute options: {e}") from e


def run_precompute(teacher_dir: str, tokenizer, dataset, description: dict, ds_config_path: str, out: str,
                   options: PrecomputeOptions, precision: str = "fp32", overwrite: bool = False) -> PrecomputeStats:
    """The whole job on this rank: plan, prepare (rank 0), compute own shards, commit (rank 0)."""
    from distill.dist import on_main
    from distill.models import model_config

    info = dist.init_distributed()
    model_config(teacher_dir, tokenizer)  # refuses a tokenizer larger than the model's output matrix
    vocab_size = len(tokenizer)  # targets over the tokenizer's ids: the output matrix's padding rows left out
    seq_len = len(dataset[0]["input_ids"]) if len(dataset) else 0
    plan = on_main(info, lambda: make_plan(
        options, teacher=fingerprint.teacher_fingerprint(teacher_dir),
        tokenizer=fingerprint.tokenizer_fingerprint(tokenizer),
        dataset=fingerprint.dataset_fingerprint(dataset, description), description=description,
        vocab_size=vocab_size, seq_len=seq_len, records=len(dataset)))
    state = on_main(info, lambda: prepare(Path(out), plan, overwrite))
    stats = PrecomputeStats()
    if state == COMPLETE:
        if info.is_main:
            print(f"{out} already holds this cache, complete ({MANIFEST} exists): nothing to do")
        return stats
    forward, _ = teacher_forward(teacher_dir, tokenizer, ds_config_path, options.micro_batch, info.world_size,
                                 info.device, precision)
    writer = CacheWriter(Path(out), plan)
    entries, stats = compute_shards(writer, dataset, forward, info.rank, info.world_size, options.micro_batch)
    everything = gather_entries(entries, info.world_size)
    on_main(info, lambda: writer.commit(everything))
    if info.is_main:
        print(f"precomputed {out}: {plan.records} records in {plan.num_shards} shards ({stats.shards_written} written "
              f"on rank 0, {stats.shards_kept} kept from an earlier run); forward {stats.forward_s:.1f} s of "
              f"{stats.total_s:.1f} s")
    if plan.mode == TOPK:
        report_kept_mass(stats, plan.k, info.is_main)
    return stats


LOW_KEPT_MASS = 0.9


def report_kept_mass(stats: PrecomputeStats, k: int, is_main: bool) -> float | None:
    """Print (rank 0) the mean probability the top-k ids hold over every position written by any rank, and
    warn when it is low: a student learns only the tail's total mass, not which tokens hold it, so a
    flat teacher (a small model, a large vocabulary) needs a larger k. Returns the mean (None if nothing
    was written, e.g. every shard kept from an earlier run)."""
    both = dist.all_reduce_sum(torch.tensor([stats.kept_mass, float(stats.positions)], dtype=torch.float64))
    if both[1] == 0:
        return None
    mean = float(both[0] / both[1])
    if is_main:
        print(f"the top-{k} ids hold {mean:.1%} of the teacher's probability on average ({int(both[1])} positions)")
        if mean < LOW_KEPT_MASS:
            print(f"warning: below {LOW_KEPT_MASS:.0%}: a student learns only the total of the remaining "
                  f"{1 - mean:.0%}, not which tokens hold it, and may not reach its teacher's cross-entropy; "
                  f"a larger --top-k keeps more")
    return mean
