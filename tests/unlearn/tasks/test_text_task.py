"""The text task: the model's own tokenizer, rows and documents from corpora, held-out evaluations
(cross-entropy and top-1, the same when sharded), and its capability direction."""

import argparse

import pytest
import torch
from text_helpers import make_corpora, train_tokenizer
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from distill.data import collate
from distill.dist import DistInfo
from distill.errors import UserError
from unlearn.tasks import TASKS
from unlearn.tasks.text import TextTask
from unlearn.tasks.text_eval import cross_entropy_and_accuracy


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return make_corpora(tmp_path_factory.mktemp("corpora"))


@pytest.fixture(autouse=True)
def _own_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def task_args(stage, argv):
    p = argparse.ArgumentParser()
    TextTask.add_args(p, stage)
    return TextTask(p.parse_args(argv), stage)


def tiny_llama(tok):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)).eval()


def test_the_registry_holds_both_tasks_with_opposite_directions():
    assert set(TASKS) == {"arithmetic", "text"}
    assert TASKS["arithmetic"].higher_is_capable and not TASKS["text"].higher_is_capable


def test_the_tokenizer_is_the_model_directory_s_own_and_pads_with_eos_without_a_pad(corpora, tmp_path):
    task = task_args("evaluate", ["--forget-data", str(corpora["forget"]), "--retain-data", str(corpora["retain"])])
    assert task.tokenizer(str(corpora["tokenizer"])).get_vocab() == AutoTokenizer.from_pretrained(
        corpora["tokenizer"]).get_vocab()
    bare = train_tokenizer(tmp_path / "no-pad", ["some text to learn from."] * 3, vocab_size=280, pad=False)
    tok = task.tokenizer(str(bare))
    assert tok.pad_token == tok.eos_token
    with pytest.raises(UserError, match="pass --tokenizer DIR"):
        task.tokenizer("gemma2-tiny")


def test_evaluations_need_both_sides(corpora):
    with pytest.raises(UserError, match="needs --retain-data or --retain-eval"):
        task_args("evaluate", ["--forget-data", str(corpora["forget"])])


def test_cross_entropy_and_top1_match_a_direct_computation_and_any_sharding(corpora):
    tok = AutoTokenizer.from_pretrained(corpora["tokenizer"])
    task = task_args("evaluate", ["--forget-data", str(corpora["forget"]), "--retain-data", str(corpora["retain"]),
                                  "--seq-len", "24"])
    rows = task._held_out("forget", tok)
    model = tiny_llama(tok)
    whole = cross_entropy_and_accuracy(model, rows, tok.pad_token_id, batch_size=4)
    batch = collate([rows[i] for i in range(len(rows))], tok.pad_token_id)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    nll = torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="sum")
    assert whole["tokens"] == int(mask.sum())
    assert whole["ce"] == pytest.approx(nll.item() / whole["tokens"], rel=1e-5)
    assert whole["top1"] == pytest.approx((logits.argmax(-1)[mask] == labels[mask]).float().mean().item())
    shards = [cross_entropy_and_accuracy(model, rows, tok.pad_token_id, batch_size=2, rank=r, world=3)
              for r in range(3)]  # no process group: each rank's own sums, recombined here
    assert sum(s["tokens"] for s in shards) == whole["tokens"]
    assert sum(s["ce"] * s["tokens"] for s in shards) / whole["tokens"] == pytest.approx(whole["ce"], rel=1e-5)


def test_the_evaluation_reports_both_sides_and_the_attack_only_forget(corpora, tmp_path):
    tok = AutoTokenizer.from_pretrained(corpora["tokenizer"])
    mcq = tmp_path / "q.jsonl"
    mcq.write_text('{"question": "which?", "choices": ["the", "model", "keeps"], "answer": 2}\n')
    task = task_args("distill", ["--data", str(corpora["mix"]), "--forget-data", str(corpora["forget"]),
                                 "--retain-data", str(corpora["retain"]), "--seq-len", "24", "--mcq-eval", str(mcq)])
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    result = task.evaluation(tok, "final", info)(tiny_llama(tok))
    sides = {f"{s}_{m}" for s in ("forget", "retain") for m in ("ce", "top1", "tokens")}
    assert set(result) == sides | {"mcq_acc", "mcq_questions"} and result["mcq_questions"] == 1
    assert set(task.evaluation(tok, "criterion", info)(tiny_llama(tok))) == sides  # questions in the final only
    relearn = task_args("relearn", ["--forget-data", str(corpora["forget"]), "--seq-len", "24"])
    assert set(relearn.evaluation(tok, "attack", info)(tiny_llama(tok))) == {"forget_ce", "forget_top1",
                                                                            "forget_tokens"}


def test_training_never_reads_the_held_out_documents(corpora):
    tok = AutoTokenizer.from_pretrained(corpora["tokenizer"])
    task = task_args("unlearn", ["--forget-data", str(corpora["forget"]), "--retain-data", str(corpora["retain"]),
                                 "--seq-len", "400"])
    pairs = task.unlearning_rows(tok, num_items=200, seed=0)
    seen = {tuple(pairs[i]["forget"]["input_ids"].tolist()) for i in range(len(pairs))}
    held = task._held_out("forget", tok)
    assert len(seen) == 54 and not seen & {tuple(held[i]["input_ids"].tolist()) for i in range(len(held))}


def test_the_criterion_and_the_strongest_attacker_follow_the_direction(corpora):
    task = task_args("distill", ["--data", str(corpora["mix"]), "--forget-data", str(corpora["forget"]),
                                 "--retain-data", str(corpora["retain"])])
    text, stop = task.criterion({"retain_ce": 2.0}, 0.05)
    assert text == "retain_ce <= 2.1000" and stop({"retain_ce": 2.09}) and not stop({"retain_ce": 2.11})
    assert task.more_capable(1.0, 2.0)  # lower cross-entropy: more capable
    from unlearn.relearn import strongest_attacker
    best, lrs = strongest_attacker({1e-4: [3.0, 2.5, 2.0], 1e-3: [3.0, 2.8, 1.5]}, higher_is_capable=False)
    assert best == [3.0, 2.5, 1.5] and lrs == [None, 1e-4, 1e-3]
