"""Writing a cache: atomic shards, manifest last, resume after a kill gives the same bytes."""

import json

import pytest
from cache_helpers import plan_for, random_rows, real_rows, shard_rows, tree_bytes, write_cache

from distill.cache import CacheError, CacheReader, CacheWriter, load_manifest, open_cache, prepare
from distill.cache.manifest import MANIFEST, PLAN, shard_name
from distill.cache.writer import COMPLETE, FRESH, RESUME
from distill.errors import UserError

SEQ, VOCAB, K = 16, 300, 8


@pytest.fixture(scope="module")
def rows():
    return random_rows(records=22, seq_len=SEQ, vocab=VOCAB, k=K, seed=3)


@pytest.fixture(scope="module")
def plan(rows):
    return plan_for(rows, SEQ, VOCAB, records_per_shard=4, chunk_records=3)  # 6 shards, the last of 2 records


@pytest.fixture(scope="module")
def reference(tmp_path_factory, rows, plan):
    cache = tmp_path_factory.mktemp("ref") / "cache"
    write_cache(cache, plan, rows)
    return cache


def test_a_complete_cache_is_manifest_plus_shards(reference, plan):
    assert sorted(p.name for p in reference.iterdir()) == [MANIFEST] + [shard_name(j) for j in range(6)]
    manifest = load_manifest(reference)
    assert manifest.plan == plan and [s.records for s in manifest.shards] == [4, 4, 4, 4, 4, 2]
    saved = json.loads((reference / MANIFEST).read_text())
    assert saved["format_version"] == 1 and saved["vocab_size"] == VOCAB and saved["k"] == K
    for key in ("teacher", "tokenizer", "dataset", "temperature", "seq_len", "records", "levels_sha256"):
        assert key in saved
    assert {"name", "first_record", "records", "bytes", "sha256"} == set(saved["shards"][0])


@pytest.mark.parametrize("done", [[], [0], [0, 1, 2], [1, 4, 5], [0, 1, 2, 3, 4]])
def test_resume_after_a_kill_is_byte_identical(tmp_path, rows, plan, reference, done):
    """A kill leaves some final shards and maybe a half-written temporary; a restart finishes the rest."""
    cache = tmp_path / "cache"
    write_cache(cache, plan, rows, shards=done, commit=False)
    pending = [j for j in range(plan.num_shards) if j not in done]
    if pending:  # killed in the middle of writing the next shard
        (cache / (shard_name(pending[0]) + ".tmp")).write_bytes(b"UNDOLC1\n" + b"\0" * 100)
    assert not (cache / MANIFEST).exists()
    with pytest.raises(CacheError, match="no manifest.json"):
        open_cache(cache)
    assert prepare(cache, plan) == RESUME
    writer = CacheWriter(cache, plan)
    kept = {j: writer.existing(j) for j in range(plan.num_shards)}
    assert sorted(j for j, e in kept.items() if e) == sorted(done)
    entries = [e for e in kept.values() if e] + [writer.write(j, shard_rows(plan, rows, j)) for j in pending]
    writer.commit(entries)
    assert tree_bytes(cache) == tree_bytes(reference)
    assert prepare(cache, plan) == COMPLETE


def test_the_manifest_waits_for_every_shard(tmp_path, rows, plan):
    cache = tmp_path / "cache"
    entries = write_cache(cache, plan, rows, shards=[0, 1, 3, 4, 5], commit=False)
    with pytest.raises(CacheError, match=r"shard shard-000002\.bin: cannot commit"):
        CacheWriter(cache, plan).commit(entries)
    assert not (cache / MANIFEST).exists() and (cache / PLAN).exists()


def test_a_damaged_shard_found_on_resume_is_recomputed(tmp_path, rows, plan, reference, capsys):
    cache = tmp_path / "cache"
    write_cache(cache, plan, rows, shards=[0, 1], commit=False)
    data = bytearray((cache / shard_name(1)).read_bytes())
    data[-5] ^= 0xFF
    (cache / shard_name(1)).write_bytes(bytes(data))
    writer = CacheWriter(cache, plan)
    assert writer.existing(0) is not None and writer.existing(1) is None
    assert "shard-000001.bin" in capsys.readouterr().err
    entries = [writer.existing(0)] + [writer.write(j, shard_rows(plan, rows, j)) for j in range(1, 6)]
    writer.commit(entries)
    assert tree_bytes(cache) == tree_bytes(reference)


def test_a_shard_of_another_plan_is_not_kept(tmp_path, rows, plan):
    cache = tmp_path / "cache"
    write_cache(cache, plan, rows, shards=[0], commit=False)
    other = plan_for(rows, SEQ, VOCAB, records_per_shard=4, chunk_records=3, width=6)
    assert CacheWriter(cache, other).existing(0) is None  # same name, other k: its header says so
    assert not (cache / shard_name(0)).exists()


def test_prepare_refuses_what_it_should_not_touch(tmp_path, rows, plan, reference):
    other = plan_for(rows, SEQ, VOCAB, records_per_shard=4, chunk_records=3, width=6)
    with pytest.raises(UserError, match=r"finished cache with a different plan.*k: 8 -> 6"):
        prepare(reference, other)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a logit cache"):
        prepare(tmp_path / "busy", plan, overwrite=True)
    assert (tmp_path / "busy" / "notes.txt").exists()
    copy = tmp_path / "copy"
    write_cache(copy, plan, rows)
    assert prepare(copy, other, overwrite=True) == FRESH and not (copy / MANIFEST).exists()


def test_real_outputs_round_trip_through_the_files(tmp_path):
    rows = real_rows()
    plan = plan_for(rows, 512, 262144, records_per_shard=2, chunk_records=1, width=64)
    write_cache(tmp_path / "cache", plan, rows)
    got = {r["record"]: r for r in CacheReader(tmp_path / "cache", shuffle=False)}
    assert sorted(got) == [0, 1, 2, 3]
    for i, r in got.items():
        assert r["topk_ids"].shape == (512, 64) and r["topk_ids"].dtype.is_floating_point is False
        assert r["input_ids"].tolist() == rows["input_ids"][i * 512:(i + 1) * 512].tolist()
        assert sorted(r["topk_ids"][7].tolist()) == sorted(rows["topk_ids"][i * 512 + 7].tolist())
