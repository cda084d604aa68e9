"""The memory estimator: meta-device parameter counts, ZeRO-3 sharding, micro-batch fits, the script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.errors import UserError
from distill.estimate import LAYOUTS, check_args, estimate, max_micro_batch, profile
from distill.models import build_meta_model, count_parameters

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preset,billions", [("gemma2-2b", 2.61), ("gemma2-9b", 9.24)])
def test_public_presets_have_the_public_parameter_counts(preset, billions):
    model = build_meta_model(preset)
    assert all(p.is_meta for p in model.parameters())  # nothing allocated
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied: counted once
    assert float(f"{count_parameters(model) / 1e9:.3g}") == billions


@pytest.fixture(scope="module")
def small():
    # gemma2-2b at 1024 tokens: the same code path as 4096, a quarter of the attention scores to trace.
    return profile("gemma2-2b", 1024)


def test_two_nodes_shard_the_model_states_further(small):
    one, two = estimate(small, 1, 8, 80, 64), estimate(small, 2, 8, 80, 64)
    for layout in ("zero3", "offload_optimizer"):
        assert two["layouts"][layout]["gpu"] < one["layouts"][layout]["gpu"]
    # Everything offloaded: a GPU holds only the layer being gathered, whatever the world size.
    assert two["layouts"]["offload_all"]["gpu"] == one["layouts"]["offload_all"]["gpu"]
    for layout in LAYOUTS:
        for run in ("student", "cache"):
            assert two["layouts"][layout]["micro_batch"][run]["checkpointed"] >= \
                one["layouts"][layout]["micro_batch"][run]["checkpointed"]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("run", ["student", "cache"])
@pytest.mark.parametrize("mode", ["checkpointed", "full"])
def test_micro_batch_grows_with_gpu_memory(small, layout, run, mode):
    fits = [estimate(small, 1, 8, mem, 64)["layouts"][layout]["micro_batch"][run][mode]
            for mem in (4, 8, 16, 24, 40, 80, 141, 1000)]
    assert fits == sorted(fits)
    assert fits[0] == 0 and fits[-1] > 0


def test_cache_targets_cost_memory(small):
    e = estimate(small, 1, 8, 80, 64)
    seq, heads = e["per_sequence_bytes"], e["loss_head_bytes"]
    assert seq["cache_batch"] == 1024 * (20 + 64 * 12)  # int64 ids and mask, fp32 logsumexp, top-64 x (int64 + fp32)
    assert heads["cache"]["chunk"] > heads["student"]["chunk"] == 128 * 256000 * 6
    wide = estimate(small, 1, 8, 80, 4096)
    assert wide["per_sequence_bytes"]["cache_batch"] > seq["cache_batch"]


def test_traced_activations_hold_the_attention_scores():
    # Eager attention saves (heads x seq x seq) probabilities: doubling seq more than doubles a layer.
    short, long = profile("gemma2-2b", 256), profile("gemma2-2b", 512)
    assert long.layer_saved > 2 * short.layer_saved
    assert long.layer_saved - 2 * short.layer_saved >= 8 * 512 * 512 * 2  # at least one bf16 copy of the s^2 growth


def test_max_micro_batch_arithmetic():
    assert max_micro_batch(100, 30, 7) == 10
    assert max_micro_batch(20, 30, 7) == 0


@pytest.mark.parametrize("args,named", [
    (dict(preset="gemma2-huge"), "'gemma2-huge'"), (dict(nodes=0), "--nodes 0"),
    (dict(gpus_per_node=-1), "--gpus-per-node -1"), (dict(gpu_mem_gib=0.0), "--gpu-mem-gb 0.0"),
    (dict(seq_len=9000), "--seq-len 9000"), (dict(topk=300000), "--topk 300000"),
])
def test_bad_arguments_are_refused_by_name(args, named):
    full = dict(preset="gemma2-2b", nodes=1, gpus_per_node=8, gpu_mem_gib=80.0, seq_len=4096, topk=64) | args
    with pytest.raises(UserError, match=named):
        check_args(**full)


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DS_ACCELERATOR="cpu")
    return subprocess.run([sys.executable, "launch/estimate.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_script_prints_a_table_then_one_line_of_json():
    done = run_script("--preset", "gemma2-2b", "--nodes", "1", "--gpus-per-node", "8", "--seq-len", "1024")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["params"] == 2614341888 and figures["seq_len"] == 1024
    assert set(figures["layouts"]) == set(LAYOUTS)
    assert any("Largest micro-batch" in line for line in lines[:-1])


@pytest.mark.parametrize("flag,value", [("--preset", "gemma2-huge"), ("--nodes", "0")])
def test_script_refuses_bad_input_in_one_line(flag, value):
    args = {"--preset": "gemma2-2b", "--nodes": "1", "--gpus-per-node": "8"} | {flag: value}
    done = run_script(*[x for kv in args.items() for x in kv])
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: ") and value in done.stderr and done.stdout == ""
