import pytest
import torch

from distill.data import IGNORE_INDEX
from unlearn.tasks.problem_rows import ProblemRows
from unlearn.tasks.tokenizer import build_char_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def decode(tok, ids):
    return tok.decode(ids.tolist(), skip_special_tokens=True)


def test_rows_are_problems_of_the_chosen_ops_and_repeatable(tok):
    rows = ProblemRows(tok, "*,/", num_items=50, seed=3)
    again = ProblemRows(tok, "*,/", num_items=50, seed=3)
    texts = [decode(tok, rows[i]["input_ids"]) for i in range(50)]
    assert all(("*" in t) != ("/" in t) and "+" not in t for t in texts)
    assert {("*" in t) for t in texts} == {True, False}  # both ops appear
    assert all(torch.equal(rows[i]["input_ids"], again[i]["input_ids"]) for i in range(50))
    other = ProblemRows(tok, "*,/", num_items=50, seed=4)
    assert any(not torch.equal(rows[i]["input_ids"], other[i]["input_ids"]) for i in range(50))


def test_every_token_is_a_target_unless_answer_only(tok):
    full = ProblemRows(tok, "*", num_items=3, seed=0)[0]
    assert torch.equal(full["labels"], full["input_ids"])
    assert full["input_ids"][0] == tok.bos_token_id and full["input_ids"][-1] == tok.eos_token_id
    ans = ProblemRows(tok, "*", num_items=3, seed=0, answer_only=True)[0]
    kept = ans["labels"][ans["labels"] != IGNORE_INDEX]
    a, b = decode(tok, full["input_ids"]).split("=")[0].split("*")
    assert decode(tok, kept).strip() == str(int(a) * int(b))


def test_bad_arguments(tok):
    with pytest.raises(ValueError, match="num_items"):
        ProblemRows(tok, "*", num_items=0, seed=0)
    with pytest.raises(ValueError, match="word_fraction"):
        ProblemRows(tok, "*", num_items=1, seed=0, word_fraction=2)
    with pytest.raises(IndexError):
        ProblemRows(tok, "*", num_items=1, seed=0)[1]
