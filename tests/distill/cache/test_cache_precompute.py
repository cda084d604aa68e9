"""Precompute: targets from a real teacher forward, in-process and under the deepspeed launcher (ZeRO-3)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from cache_helpers import tree_bytes
from transformers import AutoModelForCausalLM

from distill.cache import CacheReader, CacheWriter, Expected, compute_shards, make_plan, prepare
from distill.cache import fingerprint as fp
from distill.cache.manifest import MANIFEST, shard_name
from distill.cache.precompute import PrecomputeOptions, PrecomputeStats, report_kept_mass
from distill.cache.targets import sampled_targets, topk_targets
from distill.cache.values import sparse_kl
from distill.launcher import REPO, deepspeed_command, stage_env
from distill.models import build_model
from unlearn.tasks.arithmetic import OPS, PackedArithmeticDataset
from unlearn.tasks.tokenizer import build_char_tokenizer

SEQ = 64


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def arithmetic(tokenizer, rows: int) -> PackedArithmeticDataset:
    """The rows launch/precompute.py computes by default options (seed 0, 5% word problems)."""
    return PackedArithmeticDataset(tokenizer, OPS, SEQ, num_rows=rows, seed=0, word_fraction=0.05)


def by_id(ids, values):
    order = np.argsort(ids, axis=1)
    return np.take_along_axis(ids, order, 1), np.take_along_axis(values, order, 1)


def check_against_direct_forward(model, cache, dataset, k, records):
    """The cached top-k of `records` equals the teacher's own top-k; values within the quantiser's KL."""
    got = {r["record"]: r for r in CacheReader(cache, shuffle=False)}
    for i in records:
        with torch.no_grad():
            logits = model(input_ids=dataset[i]["input_ids"][None]).logits.float()[0]
        lse = torch.logsumexp(logits, -1)
        top, idx = torch.topk(logits, k, -1)
        exact_ids, exact_lp = by_id(idx.numpy(), (top - lse[:, None]).numpy())
        ids, lp = by_id(got[i]["topk_ids"].numpy(), got[i]["topk_logprobs"].numpy())
        np.testing.assert_array_equal(ids, exact_ids)
        np.testing.assert_allclose(got[i]["logsumexp"].numpy(), lse.numpy(), rtol=0, atol=2e-5)
        assert sparse_kl(exact_lp, lp).mean() < 1e-4
        assert torch.equal(got[i]["input_ids"], dataset[i]["input_ids"])


def test_in_process_precompute_matches_the_teacher(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = build_model("gemma2-tiny", tokenizer).eval()
    dataset = arithmetic(tokenizer, 13)
    plan = make_plan(PrecomputeOptions(k=10, records_per_shard=4, chunk_records=3), teacher="t",
                     tokenizer=fp.tokenizer_fingerprint(tokenizer), dataset="d", description={}, seq_len=SEQ,
                     vocab_size=model.config.vocab_size, records=len(dataset))
    prepare(tmp_path / "cache", plan)
    writer = CacheWriter(tmp_path / "cache", plan)
    entries, stats = compute_shards(writer, dataset, lambda ids: model(input_ids=ids).logits, micro_batch=3,
                                    show_progress=False)
    writer.commit(entries)
    assert stats.forwards == 7 and stats.dummy_forwards == 0 and stats.shards_written == 4  # 2+2+2+1 batches
    check_against_direct_forward(model, tmp_path / "cache", dataset, 10, range(13))


def test_precompute_reports_the_probability_the_top_k_ids_keep(tmp_path, tokenizer, capsys):
    torch.manual_seed(0)
    model = build_model("gemma2-tiny", tokenizer).eval()
    dataset = arithmetic(tokenizer, 5)
    plan = make_plan(PrecomputeOptions(k=10, records_per_shard=4), teacher="t", description={}, seq_len=SEQ,
                     tokenizer=fp.tokenizer_fingerprint(tokenizer), dataset="d",
                     vocab_size=model.config.vocab_size, records=len(dataset))
    prepare(tmp_path / "cache", plan)
    _, stats = compute_shards(CacheWriter(tmp_path / "cache", plan), dataset,
                              lambda ids: model(input_ids=ids).logits, micro_batch=2, show_progress=False)
    with torch.no_grad():
        probs = torch.stack([model(input_ids=dataset[i]["input_ids"][None]).logits[0] for i in range(5)]).softmax(-1)
    exact = probs.topk(10, dim=-1).values.sum(-1)  # (5, SEQ): a random teacher is flat, far below 90%
    assert stats.positions == 5 * SEQ
    assert stats.kept_mass / stats.positions == pytest.approx(exact.mean().item(), rel=1e-4)
    mean = report_kept_mass(stats, 10, is_main=True)
    out = capsys.readouterr().out
    assert mean == pytest.approx(exact.mean().item(), rel=1e-4)
    assert f"the top-10 ids hold {mean:.1%}" in out and "warning: below 90%" in out and "--top-k" in out


def test_a_teacher_the_top_k_covers_gets_no_warning(capsys):
    assert report_kept_mass(PrecomputeStats(kept_mass=95.0, positions=100), 64, is_main=True) == 0.95
    out = capsys.readouterr().out
    assert "hold 95.0%" in out and "warning" not in out
    assert report_kept_mass(PrecomputeStats(), 64, is_main=True) is None  # every shard kept from an earlier run
    assert capsys.readouterr().out == ""


def test_in_process_sampled_precompute_reads_back_every_draw(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = build_model("gemma2-tiny", tokenizer).eval()
    dataset = arithmetic(tokenizer, 5)
    plan = make_plan(PrecomputeOptions(mode="sampled", samples=12, sampling_seed=3, records_per_shard=2,
                                       temperature=1.5), teacher="t", tokenizer="tok", dataset="d", description={},
                     seq_len=SEQ, vocab_size=model.config.vocab_size, records=len(dataset))
    prepare(tmp_path / "cache", plan)
    writer = CacheWriter(tmp_path / "cache", plan)
    forward = lambda ids: model(input_ids=ids).logits  # noqa: E731
    entries, _ = compute_shards(writer, dataset, forward, micro_batch=2, show_progress=False)
    writer.commit(entries)
    got = {r["record"]: r for r in CacheReader(tmp_path / "cache", shuffle=False)}
    for i in range(5):
        with torch.no_grad():
            exact = sampled_targets(forward(dataset[i]["input_ids"][None]), 12, 1.5, [i], 3)["sample_ids"]
        assert got[i]["sample_ids"].shape == (SEQ, 12) and got[i]["sample_weights"].dtype == torch.float32
        np.testing.assert_array_equal(np.sort(got[i]["sample_ids"].numpy(), 1), np.sort(exact, 1))
        torch.testing.assert_close(got[i]["sample_weights"].sum(1), torch.ones(SEQ))


def test_draws_depend_on_the_record_not_the_batch():
    logits = torch.randn(3, 7, 30)
    together = sampled_targets(logits, 9, 1.0, [10, 11, 12], sampling_seed=5)["sample_ids"]
    alone = sampled_targets(logits[1:2], 9, 1.0, [11], sampling_seed=5)["sample_ids"]
    np.testing.assert_array_equal(together[7:14], alone)
    assert not np.array_equal(sampled_targets(logits[1:2], 9, 1.0, [11], sampling_seed=6)["sample_ids"], alone)


def test_draws_estimate_the_teacher_without_bias():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0]).repeat(1, 4000, 1)
    draws = sampled_targets(logits, 25, 2.0, [0], sampling_seed=1)["sample_ids"]
    frequency = np.bincount(draws.ravel(), minlength=5) / draws.size
    p = torch.softmax(logits[0, 0] / 2.0, -1).numpy()
    np.testing.assert_allclose(frequency, p, atol=0.005)  # 100,000 draws: standard error < 0.0016


def test_topk_targets_use_the_full_normaliser_and_temperature():
    logits = torch.randn(2, 5, 40) * 4
    out = topk_targets(logits, 6, temperature=2.0)
    lp = torch.log_softmax(logits.reshape(10, 40) / 2.0, -1)
    np.testing.assert_allclose(out["topk_logprobs"], lp.gather(1, torch.from_numpy(out["topk_ids"])).numpy(),
                               atol=1e-5)
    assert (np.exp(out["topk_logprobs"].astype(np.float64)).sum(1) < 1).all()  # a tail remains: no renormalising


# -- under the deepspeed launcher ---------------------------------------------------------------------
ROWS, PER_SHARD = 1000, 16  # 63 shards, the last of 8 records: rank 1 of 2 has one shard less (dummy forwards)


def precompute_args(teacher, out, extra=()):
    return ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--teacher", str(teacher), "--out", str(out),
            "--rows", str(ROWS), "--top-k", "8", "--records-per-shard", str(PER_SHARD), "--chunk-records", "4",
            "--micro-batch", "8", *extra]


def launch_env():
    env = stage_env()
    env["OMP_NUM_THREADS"] = "1"  # same BLAS arithmetic on 1 and 2 ranks, so the bytes can be compared
    return env


def launch(script, args, nproc, timeout=600):
    result = subprocess.run(deepspeed_command(script, args, nproc), env=launch_env(), cwd=REPO, capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny teacher: launch/pretrain.py for 3 steps (a trained, saved Hugging Face directory)."""
    out = tmp_path_factory.mktemp("teacher") / "base"
    launch("launch/pretrain.py", ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--out", str(out),
                                  "--model", "gemma2-tiny", "--steps", "3", "--global-batch", "8", "--micro-batch",
                                  "4", "--seq-len", "32", "--eval-every", "0", "--save-every", "0",
                                  "--eval-per-format", "1", "--final-eval-per-format", "1"], nproc=2)
    return out


@pytest.fixture(scope="module")
def two_rank_cache(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "cache"
    launch("launch/precompute.py", precompute_args(teacher, out), nproc=2)
    return out


@pytest.mark.slow
def test_two_rank_zero3_precompute_matches_a_direct_forward(teacher, two_rank_cache, tokenizer):
    dataset = arithmetic(tokenizer, ROWS)
    description = {"kind": "arithmetic-packed", "ops": list(OPS), "seq_len": SEQ, "rows": ROWS, "seed": 0,
                   "word_fraction": 0.05}
    expected = Expected(vocab_size=len(tokenizer), tokenizer=fp.tokenizer_fingerprint(tokenizer),
                        dataset=fp.dataset_fingerprint(dataset, description), teacher=fp.teacher_fingerprint(teacher))
    assert len(list(CacheReader(two_rank_cache, expected))) == ROWS
    model = AutoModelForCausalLM.from_pretrained(teacher, use_safetensors=True, attn_implementation="eager").eval()
    check_against_direct_forward(model, two_rank_cache, dataset, 8, [0, 1, 499, 992, 999])


@pytest.mark.slow
def test_one_rank_writes_the_same_bytes_as_two(teacher, two_rank_cache, tmp_path):
    launch("launch/precompute.py", precompute_args(teacher, tmp_path / "cache"), nproc=1)
    assert tree_bytes(tmp_path / "cache") == tree_bytes(two_rank_cache)


@pytest.mark.slow
def test_a_killed_precompute_resumes_to_the_same_bytes(teacher, two_rank_cache, tmp_path):
    out = tmp_path / "cache"
    proc = subprocess.Popen(deepspeed_command("launch/precompute.py", precompute_args(teacher, out), 2),
                            env=launch_env(), cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list(out.glob("shard-*.bin"))) < 6:
        assert proc.poll() is None and time.time() < deadline, "the run ended before it wrote 6 shards"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list(out.glob("shard-*.bin")))
    assert not (out / MANIFEST).exists() and written < 63, f"killed too late: {written} shards"
    result = launch("launch/precompute.py", precompute_args(teacher, out), nproc=2)
    assert "kept from an earlier run" in result.stdout
    assert tree_bytes(out) == tree_bytes(two_rank_cache)


@pytest.mark.slow
def test_other_arguments_or_a_bad_teacher_stop_with_one_line(teacher, two_rank_cache, tmp_path):
    def run(args):
        env = launch_env()
        env.pop("RANK", None)
        return subprocess.run([sys.executable, str(REPO / "launch/precompute.py"), *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)

    changed = run(precompute_args(teacher, two_rank_cache, ["--temperature", "2"]))
    assert changed.returncode == 2 and "different plan" in changed.stderr
    assert "temperature: 1.0 -> 2.0" in changed.stderr
    missing = run(precompute_args(tmp_path / "nowhere", tmp_path / "cache"))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "--teacher" in missing.stderr
    assert not (tmp_path / "cache").exists()
    assert (two_rank_cache / shard_name(0)).exists() and (two_rank_cache / MANIFEST).exists()
