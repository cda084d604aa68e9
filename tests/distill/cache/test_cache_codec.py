"""The codec's parts on real Gemma-3 outputs and on edge cases: values, id sets, frames, shards."""

import numpy as np
import pytest
from cache_helpers import random_rows, real_rows

from distill.cache import idsets, planes, values
from distill.cache.codec import Codec
from distill.cache.errors import RowError


def by_id(ids, *arrays):
    """Sort each row by id, so two encodings of the same sets compare entry by entry."""
    order = np.argsort(ids, axis=1)
    return [np.take_along_axis(a, order, axis=1) for a in (ids, *arrays)]


@pytest.fixture(scope="module")
def real():
    return real_rows()


def test_value_round_trip_meets_the_kl_target_and_keeps_the_tail(real):
    levels, lp = values.value_levels(), real["topk_logprobs"]
    codes, shift = values.encode_logprobs(lp, levels, values.DEFAULT_STEP)
    decoded = values.decode_logprobs(codes, shift, levels)
    kl = values.sparse_kl(lp, decoded)
    assert kl.mean() <= 1e-4 and kl.max() < 2e-4, (kl.mean(), kl.max())
    # the shift restores each row's top-k mass, so the tail is exact to float32 rounding
    np.testing.assert_allclose(values.tail_mass(decoded), values.tail_mass(lp), rtol=0, atol=5e-7)
    assert np.abs(decoded - lp).max() < 0.3  # coarse steps only where p is below e^-9 of the top


def test_levels_are_a_fixed_decreasing_table():
    levels = values.value_levels()
    assert levels[0] == 0.0 and levels[-1] == values.FLOOR and np.all(np.diff(levels) < 0)
    assert len(levels) < 65536 and levels.dtype == np.float32
    assert values.levels_digest(levels) == values.levels_digest(values.value_levels(values.DEFAULT_STEP))
    assert values.levels_digest(levels) != values.levels_digest(values.value_levels(1 / 256))


def test_near_certain_and_minus_infinity_rows_stay_exact():
    lp = np.full((3, 4), -30.0, dtype=np.float32)
    lp[0] = [-1e-7, -20.0, -25.0, -30.0]  # tail ~ 1e-7: a plain rounding would make it negative
    lp[1] = [-0.7, -0.7, -np.inf, -np.inf]  # masked tokens in the top-k
    lp[2] = [-1.5, -2.5, -150.0, -3.0]  # below the floor
    levels = values.value_levels()
    decoded = values.decode_logprobs(*values.encode_logprobs(lp, levels, values.DEFAULT_STEP), levels)
    assert np.all(np.isfinite(decoded)) and decoded.min() >= values.FLOOR - 1
    np.testing.assert_allclose(values.tail_mass(decoded), values.tail_mass(lp), atol=3e-7)
    assert np.all(values.sparse_kl(lp, decoded) < 1e-4)  # the per-token target, on each edge row


@pytest.mark.parametrize("bad", [np.nan, 0.5])
def test_values_that_are_not_log_probs_are_refused_by_row(bad):
    lp = np.full((5, 3), -2.0, dtype=np.float32)
    lp[3, 1] = bad
    with pytest.raises(RowError, match="row 3") as info:
        values.encode_logprobs(lp, values.value_levels(), values.DEFAULT_STEP)
    assert info.value.row == 3


@pytest.mark.parametrize("vocab", [77, 262144, 1 << 21])
def test_id_sets_round_trip_any_vocabulary(vocab):
    rng = np.random.default_rng(vocab)
    ids = np.stack([rng.choice(vocab, size=16, replace=False) for _ in range(300)]).astype(np.int64)
    table, stored = idsets.build_table(ids)
    gaps, order = idsets.encode_rows(ids, table)
    assert gaps.dtype == (np.uint16 if len(table) <= 1 << 16 else np.uint32)
    rebuilt = idsets.table_from_arrays(stored["distinct_gaps"], stored["classes"])
    np.testing.assert_array_equal(rebuilt, table)
    decoded = idsets.decode_rows(gaps, rebuilt)
    np.testing.assert_array_equal(decoded, np.take_along_axis(ids, order, axis=1))
    assert decoded.dtype == np.int64 and decoded.max() < vocab


def test_a_rank_outside_the_table_names_its_row():
    table = np.array([5, 9, 2], dtype=np.int64)
    gaps = np.array([[0, 1], [1, 2], [0, 2]], dtype=np.uint16)  # row 1 climbs to rank 3
    with pytest.raises(RowError, match="row 1"):
        idsets.decode_rows(gaps, table)


@pytest.mark.parametrize("dtype", ["|u1", "<u2", "<u4", "<i4", "<f4"])
def test_frames_round_trip_and_refuse_damage(dtype):
    a = (np.arange(1000) * 7919 % 65521).astype(dtype).reshape(10, 100)
    frame = planes.pack(a, 3)
    np.testing.assert_array_equal(planes.unpack(frame, dtype, a.shape), a)
    with pytest.raises(ValueError):
        planes.unpack(frame[:-3], dtype, a.shape)
    flipped = bytearray(frame)
    flipped[len(frame) // 2] ^= 0x10
    with pytest.raises(ValueError):
        planes.unpack(bytes(flipped), dtype, a.shape)
    with pytest.raises(ValueError, match="holds"):
        planes.unpack(frame, dtype, (10, 99))


def test_topk_shard_round_trip_on_real_outputs(real):
    codec = Codec("topk", 64, 262144)
    shard, chunks = codec.encode(real, chunk_rows=512)
    table = codec.table(shard)
    decoded = [codec.decode(table, c) for c in chunks]
    got = {k: np.concatenate([d[k] for d in decoded]) for k in decoded[0]}
    np.testing.assert_array_equal(got["input_ids"], real["input_ids"])
    np.testing.assert_array_equal(got["logsumexp"], real["logsumexp"])
    exact_ids, exact_lp = by_id(real["topk_ids"], real["topk_logprobs"])
    ids, lp = by_id(got["topk_ids"], got["topk_logprobs"])
    np.testing.assert_array_equal(ids, exact_ids)
    assert values.sparse_kl(exact_lp, lp).mean() <= 1e-4
    assert got["topk_ids"].dtype == np.int64 and got["topk_logprobs"].dtype == np.float32


def test_sampled_shard_round_trip_keeps_every_draw():
    rows = random_rows(records=3, seq_len=20, vocab=50, k=0, samples=12)
    codec = Codec("sampled", 12, 50)
    shard, chunks = codec.encode(rows, chunk_rows=40)
    decoded = [codec.decode(codec.table(shard), c) for c in chunks]
    ids = np.concatenate([d["sample_ids"] for d in decoded])
    np.testing.assert_array_equal(np.sort(ids, axis=1), np.sort(rows["sample_ids"], axis=1))  # same multisets
    weights = np.concatenate([d["sample_weights"] for d in decoded])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    assert (np.diff(np.sort(rows["sample_ids"], axis=1), axis=1) == 0).any()  # repeats exist and survive


def test_encoding_refuses_bad_rows_by_row():
    rows = random_rows(records=2, seq_len=10, vocab=40, k=6)
    codec = Codec("topk", 6, 40)
    dup = {**rows, "topk_ids": rows["topk_ids"].copy()}
    dup["topk_ids"][13, 2] = dup["topk_ids"][13, 0]
    with pytest.raises(RowError, match="row 13: top-k ids are not distinct"):
        codec.encode(dup, 10)
    big = {**rows, "input_ids": rows["input_ids"].copy()}
    big["input_ids"][7] = 40
    with pytest.raises(RowError, match="row 7: input_ids outside the vocabulary"):
        codec.encode(big, 10)
    infinite = {**rows, "logsumexp": rows["logsumexp"].copy()}
    infinite["logsumexp"][4] = np.inf
    with pytest.raises(RowError, match="row 4: logsumexp inf is not finite"):
        codec.encode(infinite, 10)
