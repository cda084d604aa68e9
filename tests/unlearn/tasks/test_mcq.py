"""Multiple-choice accuracy: the harness's prompt, log-likelihoods against a direct computation, accuracy
that does not depend on the sharding, and question files refused with their line named."""

import json

import pytest
import torch
from text_helpers import ENGLISH, make_corpora
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from distill.errors import UserError
from unlearn.tasks.mcq import Question, choice_loglikelihoods, encode_pair, load_questions, mcq_accuracy


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return AutoTokenizer.from_pretrained(make_corpora(tmp_path_factory.mktemp("c"), n_docs=20)["tokenizer"])


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def questions(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        words = [ENGLISH[int(j)] for j in torch.randint(0, len(ENGLISH), (8,), generator=g)]
        out.append(Question(" ".join(words[:4]) + "?", tuple(words[4:4 + 2 + i % 3]), 0))
    return out


def test_the_prompt_is_the_harness_s():
    q = Question("What is 2 + 2? ", ("3", "4", "5", "22"), 1)
    assert q.prompt == "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:"
    assert q.continuations == [" A", " B", " C", " D"]


def test_loglikelihoods_are_the_continuation_s_log_probabilities(model, tok):
    q = questions(1)[0]
    scores = choice_loglikelihoods(model, tok, q, "cpu")
    for cont, score in zip(q.continuations, scores):
        ctx, ids = encode_pair(tok, q.prompt, cont)
        assert ctx == tok(q.prompt)["input_ids"] and ids  # the tokenizer's own special tokens, as the harness
        logp = torch.log_softmax(model(input_ids=torch.tensor([ctx + ids])).logits[0], -1)
        direct = sum(logp[len(ctx) - 1 + k, t].item() for k, t in enumerate(ids))
        assert score == pytest.approx(direct, abs=1e-4)


def test_accuracy_counts_the_argmax_and_does_not_depend_on_the_sharding(model, tok):
    qs = questions(9)
    scores = [choice_loglikelihoods(model, tok, q, "cpu") for q in qs]
    best = [max(range(len(s)), key=s.__getitem__) for s in scores]
    keyed = [Question(q.question, q.choices, b if i % 3 else (b + 1) % len(q.choices)) for i, (q, b) in
             enumerate(zip(qs, best))]
    whole = mcq_accuracy(model, tok, keyed)
    assert whole == {"acc": pytest.approx(6 / 9), "questions": 9}
    shards = [mcq_accuracy(model, tok, keyed, rank=r, world=4) for r in range(4)]  # no process group
    assert sum(s["questions"] for s in shards) == 9
    assert sum(s["acc"] * s["questions"] for s in shards) == pytest.approx(6)


@pytest.mark.parametrize("row, message", [
    ({"question": "q", "choices": ["a", "b"], "answer": 2}, "answer 2 is not an index into its 2 choices"),
    ({"question": "q", "choices": ["a", "b"], "answer": -1}, "answer -1 is not an index"),
    ({"question": "q", "choices": ["a"], "answer": 0}, "choices must be a list of 2 to 10 strings"),
    ({"question": "q", "answer": 0}, "missing choices"),
])
def test_bad_questions_are_refused_with_their_line(tmp_path, row, message):
    path = tmp_path / "q.jsonl"
    fine = {"question": "fine", "choices": ["a", "b"], "answer": 1}
    path.write_text(json.dumps(fine) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(UserError, match=f"--mcq-eval {path}:2: {message}"):
        load_questions(str(path))


def test_a_missing_or_broken_file_is_refused(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_questions(str(tmp_path / "none.jsonl"))
    (tmp_path / "b.json").write_text("[{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_questions(str(tmp_path / "b.json"))
