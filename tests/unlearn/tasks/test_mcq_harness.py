"""Our multiple-choice scorer against lm-evaluation-harness itself, where it is installed
(`pip install -e ".[harness]"`; skipped otherwise): the same items as a local harness task in the MMLU
layout, run offline on an exported model directory. Per item the choices' log-likelihoods agree and the
accuracy is the harness's `acc`."""

import json

import pytest
import torch
from text_helpers import ENGLISH, make_corpora
from transformers import AutoTokenizer

from distill.models import build_model
from unlearn.tasks.mcq import Question, choice_loglikelihoods, load_questions, mcq_accuracy

lm_eval = pytest.importorskip("lm_eval")

PROMPT = ("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}"
          "\nAnswer:")  # the harness's MMLU prompt, which unlearn.tasks.mcq reproduces


def task_config(items_path) -> str:
    """A harness task over a local jsonl file (JSON is YAML)."""
    return json.dumps({"task": "undo_mcq_check", "dataset_path": "json",
                       "dataset_kwargs": {"data_files": {"test": str(items_path)}}, "test_split": "test",
                       "output_type": "multiple_choice", "doc_to_text": PROMPT, "doc_to_choice": list("ABCD"),
                       "doc_to_target": "answer",
                       "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]})


def items(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        words = [ENGLISH[int(j)] for j in torch.randint(0, len(ENGLISH), (8,), generator=g)]
        out.append({"question": " ".join(words[:4]) + "?", "choices": words[4:8], "answer": i % 4})
    return out


@pytest.mark.parametrize("bos", [False, True], ids=["plain", "bos-leading"])
def test_accuracy_and_loglikelihoods_equal_the_harness(tmp_path, bos):
    """bos-leading: the tokenizer adds bos itself, as Gemma's and Llama's do (both sides then lead with it)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from tokenizers.processors import TemplateProcessing

    tok = AutoTokenizer.from_pretrained(make_corpora(tmp_path / "corpora", n_docs=20)["tokenizer"])
    if bos:
        lead = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)])
        tok._tokenizer.post_processor = lead
        assert tok("a b")["input_ids"][0] == tok.bos_token_id
    torch.manual_seed(0)
    model = build_model("gemma2-tiny", tok).eval()
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in items(24)))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "undo_mcq_check.yaml").write_text(task_config(path))

    out = simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["undo_mcq_check"],
                          task_manager=TaskManager(include_path=str(tasks)), device="cpu", batch_size=1,
                          log_samples=True)
    theirs = out["results"]["undo_mcq_check"]["acc,none"]
    questions = load_questions(str(path))
    ours = mcq_accuracy(model, tok, questions)
    assert ours["questions"] == 24 and ours["acc"] == pytest.approx(theirs, abs=1e-12)
    for sample in out["samples"]["undo_mcq_check"]:
        q: Question = questions[sample["doc_id"]]
        harness = [float(r[0][0]) for r in sample["resps"]]
        assert choice_loglikelihoods(model, tok, q, "cpu") == pytest.approx(harness, abs=1e-4), sample["doc_id"]
