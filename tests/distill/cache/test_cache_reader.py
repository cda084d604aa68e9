"""Reading a cache back: split, order, resume, workers, and every corruption stopped by name."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from cache_helpers import plan_for, random_rows, write_cache
from torch.utils.data import DataLoader

from distill.cache import CacheError, CacheReader, Expected, load_manifest
from distill.cache.manifest import MANIFEST, shard_name
from distill.cache.reader import verify_cache
from distill.cache.shardfile import ShardFile, write_shard

SEQ, VOCAB, K, RECORDS = 12, 200, 6, 45


@pytest.fixture(scope="module")
def rows():
    return random_rows(records=RECORDS, seq_len=SEQ, vocab=VOCAB, k=K, seed=11)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("reader") / "cache"
    write_cache(path, plan_for(rows, SEQ, VOCAB, records_per_shard=8, chunk_records=3, width=K), rows)
    return path


def records(reader) -> list[int]:
    return [r["record"] for r in reader]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("block", [1, 4])
def test_readers_of_any_world_size_cover_every_record_once(cache, world, block):
    seen = Counter()
    for rank in range(world):
        seen.update(records(CacheReader(cache, rank=rank, world_size=world, block=block, seed=5)))
    assert sorted(seen) == list(range(RECORDS)) and set(seen.values()) == {1}


def test_data_loader_workers_split_a_rank_and_keep_its_order(cache):
    """Two ranks x two workers: the loader's batches are the rank's blocks of the single-process order."""
    for rank in range(2):
        alone = records(CacheReader(cache, rank=rank, world_size=2, block=4, seed=5))
        loader = DataLoader(CacheReader(cache, rank=rank, world_size=2, block=4, seed=5), batch_size=4,
                            num_workers=2)
        batches = [b["record"].tolist() for b in loader]
        assert [r for b in batches for r in b] == alone
        assert all(b["topk_ids"].shape[1:] == (SEQ, K) for b in loader)


def test_global_batches_do_not_depend_on_the_world_size(cache):
    """With block = micro-batch m, step s holds stream positions [s*G, (s+1)*G) on any world size."""
    m, global_batch = 2, 8
    single = records(CacheReader(cache, block=m, seed=9))
    for world in (2, 4):
        per_rank = [records(CacheReader(cache, rank=r, world_size=world, block=m, seed=9)) for r in range(world)]
        for step in range(RECORDS // global_batch):
            union = [x for r in range(world) for x in per_rank[r][step * global_batch // world:
                                                                  (step + 1) * global_batch // world]]
            assert sorted(union) == sorted(single[step * global_batch:(step + 1) * global_batch])


def test_order_is_a_function_of_the_seed_and_epoch(cache):
    a = records(CacheReader(cache, seed=1, epochs=2))
    assert a == records(CacheReader(cache, seed=1, epochs=2))
    assert a[:RECORDS] != records(CacheReader(cache, seed=2))
    assert a[:RECORDS] != a[RECORDS:] and sorted(a[RECORDS:]) == list(range(RECORDS))
    assert records(CacheReader(cache, shuffle=False)) == list(range(RECORDS))


@pytest.mark.parametrize("start", [0, 4, 20, 52])
def test_resume_from_a_record_position(cache, start):
    """A reader started at position P yields, per rank, what an uninterrupted one yields from P on."""
    world, block = 2, 2
    for rank in range(world):
        full = records(CacheReader(cache, rank=rank, world_size=world, block=block, seed=4, epochs=2))
        resumed = records(CacheReader(cache, rank=rank, world_size=world, block=block, seed=4, epochs=2, start=start))
        assert resumed == full[len(full) - len(resumed):]
    together = sum(len(records(CacheReader(cache, rank=r, world_size=world, block=block, seed=4, epochs=2,
                                           start=start))) for r in range(world))
    assert together == 2 * RECORDS - start


def test_a_start_that_splits_a_rank_block_is_refused(cache):
    with pytest.raises(ValueError, match="multiple of block x world_size = 4"):
        CacheReader(cache, rank=1, world_size=2, block=2, start=7)


def test_records_carry_their_inputs_and_targets(cache, rows):
    for item in CacheReader(cache, seed=3):
        i = item["record"]
        part = slice(i * SEQ, (i + 1) * SEQ)
        assert torch.equal(item["input_ids"], torch.from_numpy(rows["input_ids"][part]))
        exact = np.sort(rows["topk_ids"][part], axis=1)
        assert np.array_equal(np.sort(item["topk_ids"].numpy(), axis=1), exact)
        assert item["topk_logprobs"].dtype == torch.float32 and item["logsumexp"].shape == (SEQ,)


# -- corruption: each stops with the shard named, before a record of it is used ---------------------
@pytest.fixture
def copy(tmp_path, cache):
    target = tmp_path / "cache"
    target.mkdir()
    for f in cache.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def test_truncated_shard(copy):
    path = copy / shard_name(2)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CacheError, match=r"shard shard-000002\.bin: the file has \d+ bytes, the manifest says"):
        CacheReader(copy)


def test_missing_shard(copy):
    (copy / shard_name(4)).unlink()
    with pytest.raises(CacheError, match=r"shard shard-000004\.bin: the shard file is missing"):
        CacheReader(copy)


def flip(path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def test_bit_flips_are_caught_before_any_record_is_read(copy):
    """Every shard is hashed up front: one message names each damaged shard, nothing is yielded."""
    flip(copy / shard_name(3))
    flip(copy / shard_name(5), at=0.9)
    with pytest.raises(CacheError, match=r"2 of 6 shards differ from the manifest's sha256 .*: "
                                         r"shard-000003\.bin, shard-000005\.bin$"):
        CacheReader(copy, shuffle=False)


def test_verification_is_shared_by_the_ranks_of_a_group(copy):
    """Rank r of W hashes shards r, r + W, ... (the verdicts are then summed over the group; without a
    process group each rank sees only its own): a flip in shard 3 is rank 1's of 2 to find."""
    flip(copy / shard_name(3))
    manifest = load_manifest(copy)
    verify_cache(copy, manifest, rank=0, world_size=2)
    with pytest.raises(CacheError, match=r"1 of 6 shards .*: shard-000003\.bin$"):
        verify_cache(copy, manifest, rank=1, world_size=2)


def test_damage_past_verification_still_stops_the_reader_at_its_record(copy):
    """With verify=False (a cache checked already) a flipped byte inside a frame fails that frame's own
    checksum when its chunk is read, naming the shard and the chunk's first record."""
    path = copy / shard_name(3)
    flip(path, at=0.7)
    with pytest.raises(CacheError, match=r"shard shard-000003\.bin, record 2[4-9]: array \w+: damaged zstd frame"):
        records(CacheReader(copy, shuffle=False, verify=False))


def test_ranks_together_read_the_cache_about_once(tmp_path, rows):
    """One record per chunk: the ranks of any world size read each chunk once; only a shard's header and
    id table are read again by each further rank that takes records from it."""
    cache = tmp_path / "cache"
    write_cache(cache, plan_for(rows, SEQ, VOCAB, records_per_shard=8, chunk_records=1, width=K), rows)
    manifest = load_manifest(cache)
    overhead = []  # per shard: magic, header and id table, the bytes every reader of the shard reads
    for entry in manifest.shards:
        shard = ShardFile.open(cache, cache / entry.name, entry.bytes)
        shard.arrays(None)
        overhead.append(shard.bytes_read)
    total = sum(e.bytes for e in manifest.shards)
    for world in (1, 2, 4):
        readers = [CacheReader(cache, rank=r, world_size=world, block=2, seed=3) for r in range(world)]
        taken = [{r["record"] // 8 for r in reader} for reader in readers]  # the shards each rank took from
        extra = sum(overhead[j] * (sum(j in t for t in taken) - 1) for j in range(len(overhead)))
        assert sum(reader.bytes_read for reader in readers) == total + extra
def rewrite_shard(cache, j: int, chunk: int, mutate) -> None:
    """Rewrite shard j with mutate(table arrays, chunk `chunk`'s arrays) applied and the manifest updated to
    match: a consistent file whose stored values are out of range (what a buggy or hostile writer makes)."""
    old = ShardFile.load(cache, cache / shard_name(j))
    table, chunks = old.arrays(None), [old.arrays(c) for c in range(len(old.header["arrays"]["chunks"]))]
    mutate(table, chunks[chunk])
    header = {k: v for k, v in old.header.items() if k not in ("arrays", "payload_sha256", "kind")}
    size, sha = write_shard(cache / shard_name(j), header, table, chunks, level=3)
    saved = json.loads((cache / MANIFEST).read_text())
    saved["shards"][j].update(bytes=size, sha256=sha)
    (cache / MANIFEST).write_text(json.dumps(saved))


def set_item(name, index, value):
    def mutate(table, chunk):
        (table if name in table else chunk)[name][index] = value
    return mutate


def retype(name, dtype):
    def mutate(table, chunk):
        chunk[name] = chunk[name].astype(dtype)
    return mutate


# Chunk 1 of shard 1 = records 11-13; its row 5 lies in record 11. Each stops with the cache's error
# naming the shard (and the record where a row is at fault), never an IndexError or a silent target.
DAMAGE = [
    (set_item("gaps", (5, -1), 60000), r", record 11: row 5: refers to rank"),
    (set_item("gaps", (5, 1), 0), r", record 11: row 5: top-k ids are not distinct"),
    (set_item("codes", (5, 0), 65535), r", record 11: row 5: value code outside the codebook"),
    (set_item("shift", 5, 2 ** 30), r", record 11: row 5: \[.*\] is not a log-probability"),
    (set_item("logsumexp", 5, np.inf), r", record 11: row 5: logsumexp inf is not finite"),
    (set_item("logsumexp", 5, np.nan), r", record 11: row 5: logsumexp nan is not finite"),
    (set_item("input_ids", 5, VOCAB + 3), r", record 11: row 5: input_ids outside the vocabulary \[0, 200\): 203"),
    (retype("codes", np.float32), r", record 11: chunk 1: array codes is stored as <f4, expected <u2"),
    (set_item("distinct_gaps", -1, 10 ** 6), r": the id table holds id \d+, outside the vocab"),
    (set_item("distinct_gaps", 1, 0), r": the id table lists an id twice"),
]


@pytest.mark.parametrize("mutate, message", DAMAGE, ids=[m for _, m in DAMAGE])
def test_out_of_range_stored_values_stop_with_the_cache_error(copy, mutate, message):
    rewrite_shard(copy, 1, 1, mutate)
    with pytest.raises(CacheError, match=r"logit cache .*, shard shard-000001\.bin" + message):
        records(CacheReader(copy, shuffle=False))


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "sub/shard.bin", ".."])
def test_shard_name_outside_the_cache(copy, name):
    saved = json.loads((copy / MANIFEST).read_text())
    saved["shards"][2]["name"] = name
    (copy / MANIFEST).write_text(json.dumps(saved))
    with pytest.raises(CacheError, match=f"shard {name!r}: the shard name .*outside the cache directory"):
        CacheReader(copy)


@pytest.mark.parametrize("expected,message", [
    (Expected(vocab_size=VOCAB - 1), "vocab mismatch: the cache holds ids of a 200-token vocabulary"),
    (Expected(tokenizer="other"), "tokenizer mismatch: the cache was made for 'tok', this run has 'other'"),
    (Expected(dataset="other"), "dataset mismatch: the cache was made for 'ds'"),
])
def test_manifest_that_does_not_fit_the_run(cache, expected, message):
    with pytest.raises(CacheError, match=f"manifest.json: {message}"):
        CacheReader(cache, expected)


def test_matching_expectations_and_a_padded_vocab_are_accepted(cache):
    reader = CacheReader(cache, Expected(vocab_size=VOCAB + 56, tokenizer="tok", dataset="ds", mode="topk",
                                         seq_len=SEQ))
    assert len(records(reader)) == RECORDS


def test_unknown_manifest_version_is_refused(copy):
    saved = json.loads((copy / MANIFEST).read_text())
    saved["format_version"] = 2
    (copy / MANIFEST).write_text(json.dumps(saved))
    with pytest.raises(CacheError, match="format_version 2"):
        CacheReader(copy)


@pytest.mark.parametrize("field,value,message", [
    ("k", 0, "k must be an integer in"),
    ("k", VOCAB + 1, "k must be an integer in"),
    ("k", 6.5, "k must be an integer in"),
    ("vocab_size", True, "vocab_size must be a positive integer"),
    ("records", -3, "records must be a positive integer"),
    ("chunk_records", 10**6, "chunk_records .* exceeds records_per_shard"),
    ("temperature", float("inf"), "temperature must be a finite number"),
    ("temperature", "1.0", "temperature must be a finite number"),
    ("value_step", 0.0, "value_step must be a number in"),
    ("zstd_level", 99, "zstd_level must lie in"),
    ("mode", "dense", "mode 'dense'"),
    ("shards.0.bytes", -1, "first_record, records and bytes must be integers >= 0"),
    ("shards.1.sha256", "zz", "sha256 must be 64 lowercase hex digits"),
    ("shards", None, "shards must be a list of shard objects"),
])
def test_every_manifest_field_is_range_checked(copy, field, value, message):
    """A manifest value out of range is the cache's named error when the cache is opened, never an
    exception from inside the decoder later."""
    saved = json.loads((copy / MANIFEST).read_text())
    where, *path = field.split(".")
    if path:
        saved[where][int(path[0])][path[1]] = value
    else:
        saved[where] = value
    (copy / MANIFEST).write_text(json.dumps(saved))
    with pytest.raises(CacheError, match=f"manifest.json is malformed: .*{message}"):
        CacheReader(copy)
