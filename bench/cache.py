"""Benchmark the teacher-logit cache against the Parquet-through-`datasets` layout, in one run.

    .venv/bin/python bench/cache.py [--synthetic-records 2048] [--teacher-batches 3]

Data: the real Gemma-3-270M top-64 outputs in tests/data (2,048 positions, V = 262,144) and, for
scale, synthetic positions with the same statistics (see `synthesize`). Figures:
- bytes per token, everything in the cache directory included (shards with their headers and id
  tables, manifest), and the mean KL between the exact and the decoded (top-k + tail) targets;
- read + decode tokens/s on one core (the process pinned to one CPU): shard files read, sha256-checked,
  decompressed and decoded into the tensors the loss consumes, and the same through CacheReader;
- the baseline: the same top-k as Parquet through `datasets` (ids int32, log-probs float16, plus the
  input token and log-sum-exp), read back as numpy batches into the same tensors, on one core;
- precompute overhead: 1 - (bare teacher forwards) / (the precompute of the same batches), with a
  Gemma-3-270M-shaped teacher (random weights: the cost does not depend on their values);
- read amplification: bytes all W ranks read in one epoch / cache bytes, W = 1, 2, 8 simulated ranks
  with a micro-batch of MICRO records, for the default layout (one record per chunk) and, as the
  baseline, 16-record chunks (the earlier default); and the cost of verifying every shard's sha256.
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, as in launch/

import numpy as np
import torch

from distill.cache import CachePlan, CacheReader, CacheWriter, compute_shards, make_plan, prepare
from distill.cache.manifest import load_manifest
from distill.cache.precompute import PrecomputeOptions
from distill.cache.reader import ShardDecoder, records_of_chunk, verify_cache
from distill.cache.values import sparse_kl

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "gemma3-270m-top64.npz"  # tests/data/README.md
SEQ = 512  # the real data's sequence length
MICRO = 4  # records per micro-batch (the reader's block) in the read-amplification figures
TARGETS = {"bytes_per_token": 128, "decode_tokens_per_s": 1e6, "mean_kl_nats": 1e-4, "precompute_overhead": 0.10,
           "read_amplification": 1.1}


def load_real() -> dict[str, np.ndarray]:
    d = np.load(REAL, allow_pickle=False)
    return {"input_ids": d["token_ids"].astype(np.int64), "topk_ids": d["topk_ids"].astype(np.int64),
            "topk_logprobs": d["topk_logprobs"].astype(np.float32), "logsumexp": d["logsumexp"].astype(np.float32),
            "vocab_size": int(d["vocab_size"])}


def _replace_some(rng, ids: np.ndarray, probs: np.ndarray, fraction: float) -> np.ndarray:
    """Replace `fraction` of each row's ids by draws from `probs`, keeping every row's ids distinct."""
    ids = ids.copy()
    n, k = ids.shape
    cols = np.argsort(rng.random((n, k)), axis=1)[:, : int(round(fraction * k))]
    for slot in range(cols.shape[1]):  # one slot per pass, so two new ids of a row never meet unchecked
        rows = np.arange(n)
        while rows.size:
            draws = rng.choice(len(probs), size=rows.size, p=probs)
            ok = ~(ids[rows] == draws[:, None]).any(axis=1)  # already in the row: draw again
            ids[rows[ok], cols[rows[ok], slot]] = draws[ok]
            rows = rows[~ok]
    return ids


def synthesize(real: dict, n_rows: int, seed: int = 0, fraction: float = 0.25) -> dict[str, np.ndarray]:
    """n_rows positions with the real data's statistics, none of them a copy of a real one.

    Each synthetic position starts from a random real one and keeps its shape:
    - log-probs: that position's top-64 values, each after the first jittered by N(0, 0.1) nats and
      re-sorted, then shifted so the top-64 mass equals the real one (the tail masses stay real);
    - ids: that position's ids (so which tokens co-occur, and with which values, stays real) with a
      quarter of them replaced by draws from the real top-64 id frequencies (90%) mixed with a
      Zipf(1.1) prior over the whole vocabulary by id (10%; Gemma's ids run roughly from frequent to
      rare), so a large shard keeps meeting new and rare ids as a corpus of many documents would;
    - input tokens: drawn from the real input-token frequencies.
    """
    rng = np.random.default_rng(seed)
    v, k = real["vocab_size"], real["topk_ids"].shape[1]
    counts = np.bincount(real["topk_ids"].reshape(-1), minlength=v).astype(np.float64)
    zipf = 1.0 / np.arange(1, v + 1) ** 1.1
    probs = 0.9 * counts / counts.sum() + 0.1 * zipf / zipf.sum()
    src = rng.integers(0, len(real["topk_logprobs"]), n_rows)
    ids = _replace_some(rng, real["topk_ids"][src], probs, fraction)
    base = real["topk_logprobs"][src].astype(np.float64)  # descending, as stored
    lp = base.copy()
    lp[:, 1:] += rng.normal(0, 0.1, size=(n_rows, k - 1))
    lp = -np.sort(-lp, axis=1)
    lp += (np.log(np.exp(base).sum(1)) - np.log(np.exp(lp).sum(1)))[:, None]
    tokens = np.bincount(real["input_ids"], minlength=v).astype(np.float64)
    return {"input_ids": rng.choice(v, size=n_rows, p=tokens / tokens.sum()), "topk_ids": ids,
            "topk_logprobs": lp.astype(np.float32), "logsumexp": real["logsumexp"][src], "vocab_size": v}


def describe(rows: dict) -> str:
    mass = np.exp(rows["topk_logprobs"].astype(np.float64)).sum(1)
    per_2k = [len(np.unique(rows["topk_ids"][i:i + 2048])) for i in range(0, len(mass) - 2047, 2048)][:8]
    return (f"top-64 mass mean {mass.mean():.3f} p10 {np.percentile(mass, 10):.3f}; "
            f"distinct ids per 2048 positions {np.mean(per_2k):.0f}")


def write_cache(rows: dict, out: Path, records_per_shard: int, level: int,
                chunk_records: int | None = None) -> tuple[CachePlan, float]:
    """Write `rows` (n = records x SEQ positions) as a cache; returns (plan, seconds spent encoding+writing)."""
    n = len(rows["input_ids"])
    options = PrecomputeOptions(zstd_level=level, records_per_shard=records_per_shard, chunk_records=chunk_records)
    plan = make_plan(options,
                     teacher="bench", tokenizer="bench", dataset="bench", description={"bench": n},
                     vocab_size=rows["vocab_size"], seq_len=SEQ, records=n // SEQ)
    prepare(out, plan, overwrite=True)
    writer, t0, entries = CacheWriter(out, plan), time.perf_counter(), []
    for j in range(plan.num_shards):
        rec = plan.shard_records(j)
        part = slice(rec.start * SEQ, rec.stop * SEQ)
        entries.append(writer.write(j, {k: v[part] for k, v in rows.items() if k != "vocab_size"}))
    writer.commit(entries)
    return plan, time.perf_counter() - t0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def mean_kl(rows: dict, cache: Path) -> float:
    """Mean over positions of KL(exact || decoded) of the (k+1)-bucket targets, read through CacheReader."""
    got = {r["record"]: r for r in CacheReader(cache, shuffle=False)}
    decoded_ids = torch.cat([got[i]["topk_ids"] for i in sorted(got)]).numpy()
    decoded_lp = torch.cat([got[i]["topk_logprobs"] for i in sorted(got)]).numpy()
    exact_order, decoded_order = np.argsort(rows["topk_ids"], 1), np.argsort(decoded_ids, 1)
    same_ids = np.take_along_axis(rows["topk_ids"], exact_order, 1) == np.take_along_axis(decoded_ids, decoded_order, 1)
    if not same_ids.all():
        raise AssertionError("the decoded top-k ids differ from the exact ones")
    return float(sparse_kl(np.take_along_axis(rows["topk_logprobs"], exact_order, 1),
                           np.take_along_axis(decoded_lp, decoded_order, 1)).mean())


def one_core():
    """Pin this process (all its threads) to one CPU; returns the previous affinity to restore."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    torch.set_num_threads(1)
    return before


def decode_rate(cache: Path, repeats: int = 3) -> float:
    """Tokens/s of reading, checking and decoding every shard into per-record tensors (best of repeats)."""
    manifest, best = load_manifest(cache), 0.0
    for _ in range(repeats):
        t0, tokens = time.perf_counter(), 0
        for j in range(len(manifest.shards)):
            decoder = ShardDecoder(cache, manifest, j)
            for c in range(-(-decoder.file.header["records"] // manifest.plan.chunk_records)):
                first = decoder.first + c * manifest.plan.chunk_records
                decoded = decoder.chunk(c)
                records = np.arange(first, first + len(decoded["input_ids"]) // SEQ)
                tokens += sum(len(r["input_ids"]) for r in records_of_chunk(decoded, records, first, SEQ))
        best = max(best, tokens / (time.perf_counter() - t0))
    return best


def reader_rate(cache: Path) -> float:
    """Tokens/s of iterating CacheReader (shuffled, background prefetch) over the whole cache, unverified."""
    t0, tokens = time.perf_counter(), 0
    for record in CacheReader(cache, seed=1, verify=False):  # verification is timed on its own
        tokens += len(record["input_ids"])
    return tokens / (time.perf_counter() - t0)


def read_amplification(cache: Path, world: int) -> float:
    """Bytes read from shard files by `world` simulated ranks over one epoch / the cache's bytes."""
    total = sum(e.bytes for e in load_manifest(cache).shards)
    read = 0
    for rank in range(world):
        reader = CacheReader(cache, rank=rank, world_size=world, block=MICRO, seed=2, verify=False)
        for _ in reader:
            pass
        read += reader.bytes_read
    return read / total


def verify_seconds_per_gib(cache: Path) -> float:
    manifest = load_manifest(cache)
    t0 = time.perf_counter()
    verify_cache(cache, manifest)
    return (time.perf_counter() - t0) / (sum(e.bytes for e in manifest.shards) / 2 ** 30)


def parquet_baseline(rows: dict, out: Path, measure_read: bool) -> dict:
    """The same top-k as Parquet written and read through `datasets`: bytes/token and read tokens/s.

    Columns per position: input_id int32, topk_ids int32[64], topk_logprobs float16[64], logsumexp
    float32 (fixed-size lists, the fastest layout for numpy). Reading: Dataset.from_parquet (its one-time
    conversion to an Arrow cache is timed apart), then numpy batches of one record, made into the same
    int64/float32 tensors the cache yields."""
    from datasets import Dataset, Features, Sequence, Value, disable_progress_bars

    disable_progress_bars()
    k = rows["topk_ids"].shape[1]
    features = Features({"input_id": Value("int32"), "topk_ids": Sequence(Value("int32"), length=k),
                         "topk_logprobs": Sequence(Value("float16"), length=k), "logsumexp": Value("float32")})
    table = {"input_id": rows["input_ids"].astype(np.int32), "topk_ids": rows["topk_ids"].astype(np.int32),
             "topk_logprobs": rows["topk_logprobs"].astype(np.float16), "logsumexp": rows["logsumexp"]}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "topk.parquet"
    Dataset.from_dict(table, features=features).to_parquet(str(path))
    n = len(rows["input_ids"])
    result = {"bytes_per_token": path.stat().st_size / n}
    if measure_read:
        t0 = time.perf_counter()
        loaded = Dataset.from_parquet(str(path), cache_dir=str(out / "hf-cache")).with_format("numpy")
        t1 = time.perf_counter()
        tokens = 0
        for i in range(0, n, SEQ):
            batch = loaded[i:i + SEQ]
            item = {"input_ids": torch.from_numpy(batch["input_id"].astype(np.int64)),
                    "topk_ids": torch.from_numpy(batch["topk_ids"].astype(np.int64)),
                    "topk_logprobs": torch.from_numpy(batch["topk_logprobs"].astype(np.float32)),
                    "logsumexp": torch.from_numpy(batch["logsumexp"])}
            tokens += len(item["input_ids"])
        result.update(tokens_per_s=tokens / (time.perf_counter() - t1), load_s=t1 - t0)
    return result


def gemma3_270m_shape():
    """A Gemma-3-270M-shaped causal LM (V = 262,144, hidden 640, 18 layers), random weights, eval mode."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
                              max_position_embeddings=32768, query_pre_attn_scalar=256)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


def precompute_overhead(real: dict, records: int, out: Path) -> dict:
    """Run compute_shards with a real teacher forward on `records` real records (one per shard and
    per forward, so writing a shard overlaps the next forward); overhead = 1 - forward time / total."""
    model = gemma3_270m_shape()
    dataset = [{"input_ids": torch.from_numpy(real["input_ids"][i * SEQ:(i + 1) * SEQ])} for i in range(records)]
    plan = make_plan(PrecomputeOptions(records_per_shard=1, micro_batch=1), teacher="bench", tokenizer="bench",
                     dataset="bench", description={"bench": records}, vocab_size=real["vocab_size"], seq_len=SEQ,
                     records=records)
    prepare(out, plan, overwrite=True)
    writer = CacheWriter(out, plan)
    entries, stats = compute_shards(writer, dataset, lambda ids: model(input_ids=ids, use_cache=False).logits,
                                    show_progress=False)
    writer.commit(entries)
    return {"overhead": 1.0 - stats.forward_s / stats.total_s, "forward_s": stats.forward_s, "total_s": stats.total_s}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic-records", type=int, default=2048, help="synthetic records of 512 positions")
    p.add_argument("--teacher-records", type=int, default=2, help="records of 512 tokens for the precompute")
    p.add_argument("--zstd-level", type=int, default=PrecomputeOptions().zstd_level)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        figures = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures, sort_keys=True))


def run(args, work: Path) -> dict:
    real = load_real()
    synthetic = synthesize(real, args.synthetic_records * SEQ)
    print(f"real data ({len(real['input_ids'])} positions): {describe(real)}")
    print(f"synthetic ({len(synthetic['input_ids'])} positions): {describe(synthetic)}")
    f: dict = {}
    write_cache(real, work / "real", records_per_shard=4, level=args.zstd_level)
    f["bytes_per_token"] = dir_bytes(work / "real") / len(real["input_ids"])
    f["mean_kl_nats"] = mean_kl(real, work / "real")
    _, write_s = write_cache(synthetic, work / "synthetic", records_per_shard=256, level=args.zstd_level)
    n_syn = len(synthetic["input_ids"])
    f["synthetic_bytes_per_token"] = dir_bytes(work / "synthetic") / n_syn
    f["synthetic_mean_kl_nats"] = mean_kl(synthetic, work / "synthetic")
    f["encode_tokens_per_s"] = n_syn / write_s
    f["parquet_bytes_per_token"] = parquet_baseline(real, work / "parquet-real", False)["bytes_per_token"]
    affinity = one_core()
    try:
        f["decode_tokens_per_s"] = decode_rate(work / "synthetic")
        f["reader_tokens_per_s"] = reader_rate(work / "synthetic")
        baseline = parquet_baseline(synthetic, work / "parquet-synthetic", True)
    finally:
        os.sched_setaffinity(0, affinity)
        torch.set_num_threads(len(affinity))
    f["synthetic_parquet_bytes_per_token"] = baseline["bytes_per_token"]
    f["parquet_tokens_per_s"], f["parquet_load_s"] = baseline["tokens_per_s"], baseline["load_s"]
    f["size_ratio_parquet_over_cache"] = f["parquet_bytes_per_token"] / f["bytes_per_token"]
    f["speed_ratio_cache_over_parquet"] = f["decode_tokens_per_s"] / f["parquet_tokens_per_s"]
    overhead = precompute_overhead(real, args.teacher_records, work / "precompute")
    f["precompute_overhead"], f["teacher_forward_s"] = overhead["overhead"], overhead["forward_s"]
    f["precompute_total_s"] = overhead["total_s"]
    write_cache(synthetic, work / "chunks16", records_per_shard=256, level=args.zstd_level, chunk_records=16)
    for world in (1, 2, 8):
        f[f"read_amplification_w{world}"] = read_amplification(work / "synthetic", world)
        f[f"chunks16_read_amplification_w{world}"] = read_amplification(work / "chunks16", world)
    f["read_amplification"] = f["read_amplification_w8"]
    f["chunks16_bytes_per_token"] = dir_bytes(work / "chunks16") / n_syn
    f["verify_s_per_gib"] = verify_seconds_per_gib(work / "synthetic")
    report(f)
    return f


def report(f: dict) -> None:
    print(f"size      cache {f['bytes_per_token']:.1f} B/token (real), "
          f"{f['synthetic_bytes_per_token']:.1f} (synthetic); parquet {f['parquet_bytes_per_token']:.1f} (real), "
          f"{f['synthetic_parquet_bytes_per_token']:.1f} (synthetic); parquet/cache "
          f"{f['size_ratio_parquet_over_cache']:.2f}x; target <= 128")
    print(f"accuracy  mean KL(exact || decoded) {f['mean_kl_nats']:.2e} nats (real), "
          f"{f['synthetic_mean_kl_nats']:.2e} (synthetic); target <= 1e-4")
    print(f"speed     decode {f['decode_tokens_per_s']:.3g} tokens/s on one core, CacheReader "
          f"{f['reader_tokens_per_s']:.3g}; parquet {f['parquet_tokens_per_s']:.3g} (+ {f['parquet_load_s']:.1f} s "
          f"load); cache/parquet {f['speed_ratio_cache_over_parquet']:.2f}x; target >= 1e6")
    print(f"encode    {f['encode_tokens_per_s']:.3g} tokens/s (codec + zstd + write, one thread)")
    print(f"precompute overhead {f['precompute_overhead']:.3f} of {f['precompute_total_s']:.1f} s "
          f"(teacher forward {f['teacher_forward_s']:.1f} s); target <= 0.10")
    reads = ", ".join(f"W={w} {f[f'read_amplification_w{w}']:.3f}" for w in (1, 2, 8))
    base = ", ".join(f"W={w} {f[f'chunks16_read_amplification_w{w}']:.3f}" for w in (1, 2, 8))
    print(f"reads     bytes read per epoch / cache bytes, micro-batch {MICRO}: {reads}; 16-record chunks "
          f"({f['chunks16_bytes_per_token']:.1f} B/token): {base}; W=8 ratio "
          f"{f['read_amplification_w8'] / f['chunks16_read_amplification_w8']:.3f}x; target <= 1.1")
    print(f"verify    sha256 of every shard: {f['verify_s_per_gib']:.2f} s/GiB (one thread, files in the page cache)")
    misses = [k for k, t in TARGETS.items() if (f[k] < t if k == "decode_tokens_per_s" else f[k] > t)]
    print("targets   " + ("all met" if not misses else "MISSED: " + ", ".join(misses)))


if __name__ == "__main__":
    main()
