"""--task text through every stage on 2 ZeRO-3 ranks: tiny random Gemma-2 and Llama models, a BPE tokenizer
trained here, corpora written here as jsonl and parquet (tests/text_helpers.py).

The chain: pretrain -> unlearn (MaxEnt) -> precompute -> distill from the cache at alpha 1 -> relearn ->
evaluate (pretraining and the attack through the fused cross-entropy head), each reading its data and
evaluations through the text task; then a cache of another corpus is refused before training, and a
Llama teacher is distilled online at alpha 1 (its norms back at 1)."""

import json
import os

import pytest
from launch_helpers import check, run_deepspeed, run_python
from safetensors.torch import load_file
from text_helpers import make_corpora
from transformers import AutoTokenizer, LlamaConfig

from distill.launcher import REPO
from distill.models import preset_config

pytestmark = pytest.mark.slow
ZERO3 = str(REPO / "ds_configs/zero3.json")
TRAIN = ["--ds_config", ZERO3, "--global-batch", "8", "--micro-batch", "4", "--save-every", "0", "--eval-every", "0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-task")
    data = make_corpora(root / "data")
    tok = AutoTokenizer.from_pretrained(data["tokenizer"])
    gemma = root / "gemma-init"
    config = preset_config("gemma2-tiny", tok)
    config.num_hidden_layers, config.layer_types = 2, config.layer_types[:2]
    config.save_pretrained(gemma)
    tok.save_pretrained(gemma)
    llama = root / "llama-init"
    LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id).save_pretrained(llama)
    tok.save_pretrained(llama)
    sides = ["--forget-data", str(data["forget"]), "--retain-data", str(data["retain"]), "--seq-len", "32",
             "--eval-docs", "8"]
    saved = os.environ.get("HF_DATASETS_CACHE")
    os.environ["HF_DATASETS_CACHE"] = str(root / "hf-datasets")  # the stages' tokenised corpora, not ~/.cache
    yield {"root": root, "data": data, "gemma": gemma, "llama": llama, "sides": sides}
    if saved is None:
        os.environ.pop("HF_DATASETS_CACHE")
    else:
        os.environ["HF_DATASETS_CACHE"] = saved


def text(world, *flags):
    return ["--task", "text", *world["sides"], *flags]


def summary(out):
    return json.loads((out / "summary.json").read_text())


def test_the_text_chain_runs_end_to_end(world):
    root, data = world["root"], world["data"]
    base, unlearned, cache, student = (root / n for n in ("base", "unlearned", "cache", "student"))
    check(run_deepspeed("launch/pretrain.py", [*TRAIN, "--model", str(world["gemma"]), "--out", str(base), "--steps",
                                               "6", "--lr", "3e-3", "--loss-head", "fused",  # as at a 256k vocabulary
                                               *text(world, "--data", str(data["mix"]))], nproc=2, timeout=600))
    assert json.loads((base / "run_config.json").read_text())["loss_head"] == "fused"
    before = summary(base)["evaluation"]
    assert before["forget_ce"] > 0 and before["retain_tokens"] > 0

    check(run_deepspeed("launch/unlearn.py", [*TRAIN, "--model", str(base), "--out", str(unlearned), "--method",
                                              "maxent", "--steps", "3", *text(world)], nproc=2, timeout=600))
    after = summary(unlearned)["evaluation"]
    assert after["forget_ce"] > before["forget_ce"]  # MaxEnt pushes the forget text toward uniform

    check(run_deepspeed("launch/precompute.py", ["--ds_config", ZERO3, "--teacher", str(unlearned), "--out",
                                                 str(cache), "--task", "text", "--data", str(data["mix"]), "--seq-len",
                                                 "32", "--top-k", "8", "--records-per-shard", "48"], nproc=2,
                        timeout=600))
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["dataset_description"]["kind"] == "text-packed"

    check(run_deepspeed("launch/distill.py", [*TRAIN, "--teacher", str(unlearned), "--cache", str(cache), "--out",
                                              str(student), "--alpha", "1", "--steps", "4", "--retain-gap", "-1",
                                              *text(world, "--data", str(data["mix"]))], nproc=2, timeout=600))
    distilled = summary(student)
    assert distilled["steps"] == 4 and distilled["criterion"].startswith("retain_ce <= ")
    assert "teacher_retain_ce" in distilled and distilled["evaluation"]["retain_ce"] > 0

    attack = root / "relearn.json"
    check(run_deepspeed("launch/relearn.py", ["--ds_config", ZERO3, "--model", str(student), "--out", str(attack),
                                              "--global-batch", "8", "--micro-batch", "4", "--steps", "4",
                                              "--eval-every", "2", "--lrs", "1e-3,3e-3", "--loss-head", "fused",
                                              "--task", "text",
                                              "--forget-data", str(data["forget"]), "--seq-len", "32", "--eval-docs",
                                              "8"], nproc=2, timeout=600))
    result = json.loads(attack.read_text())
    assert result["metric"] == "forget_ce" and result["higher_is_capable"] is False
    by_lr = result["by_lr"]
    assert result["forget_ce"] == [min(c[i] for c in by_lr.values()) for i in range(3)]  # strongest = lowest CE

    scored = root / "eval.json"
    check(run_python("launch/evaluate.py", ["--model", str(student), "--out", str(scored), *text(world)]))
    assert json.loads(scored.read_text())["retain_ce"] == pytest.approx(distilled["evaluation"]["retain_ce"],
                                                                        rel=1e-4)

    other = run_python("launch/distill.py", [*TRAIN, "--teacher", str(unlearned), "--cache", str(cache), "--out",
                                             str(root / "refused"), *text(world, "--data", str(data["retain"]))])
    assert other.returncode == 2 and "corpus mismatch" in other.stderr, other.stderr[-2000:]
    assert not (root / "refused").exists()


def test_a_llama_teacher_distils_online_into_a_fresh_init_of_its_own(world):
    root, data = world["root"], world["data"]
    teacher, student = root / "llama-teacher", root / "llama-student"
    check(run_deepspeed("launch/pretrain.py", [*TRAIN, "--model", str(world["llama"]), "--out", str(teacher),
                                               "--steps", "2", *text(world, "--data", str(data["mix"]))], nproc=2,
                        timeout=600))
    check(run_deepspeed("launch/distill.py", [*TRAIN, "--teacher", str(teacher), "--online", "--out", str(student),
                                              "--alpha", "1", "--steps", "2", "--retain-gap", "-1", "--lr", "1e-30",
                                              "--schedule", "constant",  # the weights stay the student's init
                                              *text(world, "--data", str(data["mix"]))], nproc=2, timeout=600))
    weights = load_file(student / "model.safetensors")
    norms = {n: w for n, w in weights.items() if w.dim() == 1}
    assert norms and all(float((w - 1).abs().max()) < 1e-6 for w in norms.values())  # a fresh init: norms at 1
    kd = [json.loads(x)["loss/kd"] for x in (student / "metrics.jsonl").read_text().splitlines() if "loss/kd" in x]
    assert len(kd) == 2 and all(v > 0 for v in kd)
