import itertools
import operator
import re
import string

import numpy as np
import pytest
import torch

from unlearn.tasks.arithmetic import (
    FORGET_OPS,
    FORMATS,
    OPS,
    RETAIN_OPS,
    PackedArithmeticDataset,
    Problem,
    eval_problems,
    parse_answer,
    parse_ops,
    sample_problem,
)
from unlearn.tasks.templates import EVAL_TEMPLATES, ITEMS, NAMES, TRAIN_TEMPLATES
from unlearn.tasks.tokenizer import build_char_tokenizer, encode_text

APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}
TEMPLATE_CHARS = set(string.ascii_letters + string.digits + " .,?'-")


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def _many(op, fmt="equation", split="train", n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return [sample_problem(rng, op, fmt, split) for _ in range(n)]


def test_op_constants():
    assert OPS == ("+", "-", "*", "/")
    assert RETAIN_OPS == ("+", "-") and FORGET_OPS == ("*", "/")
    assert FORMATS == ("equation", "word")


@pytest.mark.parametrize("op", ["+", "-", "*"])
def test_operand_ranges(op):
    hi = 50 if op in ("+", "-") else 20
    probs = _many(op)
    for p in probs:
        assert 1 <= p.a <= hi and 1 <= p.b <= hi
        assert p.answer == APPLY[op](p.a, p.b)
    # The whole range is actually used, not a sub-range.
    assert min(p.b for p in probs) == 1 and max(p.a for p in probs) == hi


def test_subtraction_non_negative():
    probs = _many("-")
    assert all(p.a >= p.b and p.answer >= 0 for p in probs)
    assert any(p.answer == 0 for p in probs)


def test_division_whole():
    probs = _many("/")
    for p in probs:
        assert 1 <= p.b <= 20 and 1 <= p.answer <= 20
        assert p.a == p.answer * p.b
    assert max(p.a for p in probs) == 400


def test_equation_text_format():
    p = Problem(op="+", format="equation", a=12, b=7, answer=19, prompt="12 + 7 =")
    assert p.text == "12 + 7 = 19"
    for op in OPS:
        for q in _many(op, n=50):
            assert q.prompt == f"{q.a} {op} {q.b} ="
            assert q.text == f"{q.a} {op} {q.b} = {q.answer}"


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("split", ["train", "eval"])
def test_word_problem_answer_matches_operands(op, split):
    templates = (TRAIN_TEMPLATES if split == "train" else EVAL_TEMPLATES)[op]
    for p in _many(op, fmt="word", split=split, n=100):
        assert p.format == "word" and p.answer == APPLY[op](p.a, p.b)
        assert p.prompt.endswith(" Answer:") and p.prompt.count(":") == 1
        assert p.text == f"{p.prompt} {p.answer}"
        assert str(p.a) in p.prompt and str(p.b) in p.prompt
        # The prompt comes from this split's templates.
        assert any(_matches(t, p) for t in templates)


def _matches(template, p):
    body = p.prompt.removesuffix(" Answer:")
    return any(
        template.format(a=p.a, b=p.b, name=n, item=i) == body for n, i in itertools.product(NAMES, ITEMS)
    )


def test_template_counts_and_distinct():
    everything = []
    for op in OPS:
        assert len(TRAIN_TEMPLATES[op]) == 20 and len(EVAL_TEMPLATES[op]) == 10
        assert not set(TRAIN_TEMPLATES[op]) & set(EVAL_TEMPLATES[op])
        everything += TRAIN_TEMPLATES[op] + EVAL_TEMPLATES[op]
    assert len(everything) == 120 and len(set(everything)) == 120
    assert set(TRAIN_TEMPLATES) == set(EVAL_TEMPLATES) == set(OPS)
    assert 15 <= len(NAMES) == len(set(NAMES)) and 15 <= len(ITEMS) == len(set(ITEMS))


def test_templates_use_both_operands_and_allowed_chars():
    for template in itertools.chain(*TRAIN_TEMPLATES.values(), *EVAL_TEMPLATES.values()):
        assert "{a}" in template and "{b}" in template
        assert "Answer" not in template
        stripped = template
        for field in ("{a}", "{b}", "{name}", "{item}"):
            stripped = stripped.replace(field, "")
        assert set(stripped) <= TEMPLATE_CHARS, template
    for word in NAMES + ITEMS:
        assert set(word) <= TEMPLATE_CHARS


def test_every_filled_template_encodes_and_is_short(tok):
    # Largest operands give the longest strings: 3-digit dividend/product.
    for op in OPS:
        a, b, ans = {"+": (50, 50, 100), "-": (50, 49, 1), "*": (20, 20, 400), "/": (400, 20, 20)}[op]
        for template in TRAIN_TEMPLATES[op] + EVAL_TEMPLATES[op]:
            for name, item in itertools.product(NAMES, ITEMS):
                text = f"{template.format(a=a, b=b, name=name, item=item)} Answer: {ans}"
                assert len(text) < 130, text
                assert len(encode_text(tok, text)) == len(text)


def test_parse_ops():
    assert parse_ops("+,-") == ("+", "-")
    assert parse_ops(" / , * ,*") == ("*", "/")
    assert parse_ops(["/", "+"]) == ("+", "/")
    assert parse_ops("-") == ("-",)
    with pytest.raises(ValueError, match=r"'x'.*\+ - \* /"):
        parse_ops("+,x")
    with pytest.raises(ValueError, match="'%'"):
        parse_ops(["%"])
    for empty in ("", [], " , "):
        with pytest.raises(ValueError):
            parse_ops(empty)


def test_sample_problem_rejects_bad_args():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="'%'"):
        sample_problem(rng, "%", "equation", "train")
    with pytest.raises(ValueError, match="'essay'"):
        sample_problem(rng, "+", "essay", "train")
    with pytest.raises(ValueError, match="'test'"):
        sample_problem(rng, "+", "word", "test")


def test_eval_problems_deterministic_and_ordered():
    probs = eval_problems("*,+", n_per_format=7, seed=3)
    assert probs == eval_problems(["+", "*"], n_per_format=7, seed=3)
    assert probs != eval_problems("+,*", n_per_format=7, seed=4)
    assert len(probs) == 2 * 2 * 7
    expected = [(op, fmt) for op in ("+", "*") for fmt in FORMATS for _ in range(7)]
    assert [(p.op, p.format) for p in probs] == expected
    assert len(eval_problems(RETAIN_OPS)) == 400
    # Each op's problems do not depend on which other ops are requested.
    assert eval_problems("*", n_per_format=7, seed=3) == probs[14:]


def test_eval_problems_use_heldout_templates():
    for p in eval_problems(OPS, n_per_format=30):
        if p.format == "word":
            assert any(_matches(t, p) for t in EVAL_TEMPLATES[p.op])


def test_dataset_rows(tok):
    ds = PackedArithmeticDataset(tok, "+,-,*,/", seq_len=64, num_rows=10, seed=5)
    assert len(ds) == 10
    row = ds[3]
    assert set(row) == {"input_ids", "labels"}
    assert row["input_ids"].dtype == torch.long and row["input_ids"].shape == (64,)
    assert torch.equal(row["input_ids"], row["labels"])
    assert row["input_ids"][0].item() == 1
    again = PackedArithmeticDataset(tok, "+,-,*,/", seq_len=64, num_rows=10, seed=5)
    assert torch.equal(again[3]["input_ids"], row["input_ids"])
    assert not torch.equal(ds[4]["input_ids"], row["input_ids"])
    other_seed = PackedArithmeticDataset(tok, "+,-,*,/", seq_len=64, num_rows=10, seed=6)
    assert not torch.equal(other_seed[3]["input_ids"], row["input_ids"])
    for i in (-1, 10):
        with pytest.raises(IndexError):
            ds[i]


def test_dataset_row_decodes_to_packed_problems(tok):
    ds = PackedArithmeticDataset(tok, "+", seq_len=200, num_rows=1, seed=0, word_fraction=0.5)
    text = tok.decode(ds[0]["input_ids"].tolist())
    pieces = text.split("<bos>")
    assert pieces[0] == ""
    for piece in pieces[1:-1]:  # the last one may be truncated
        body = piece.removesuffix("<eos>")
        assert piece.endswith("<eos>") and "<eos>" not in body
        prompt, answer = body.rsplit(" ", 1)
        nums = [int(x) for x in re.findall(r"[0-9]+", prompt)]
        assert int(answer) == nums[0] + nums[1]


@pytest.mark.parametrize("ops, banned", [("+,-", "*/"), ("*,/", "+-")])
def test_dataset_contains_only_chosen_ops(tok, ops, banned):
    ds = PackedArithmeticDataset(tok, ops, seq_len=128, num_rows=20, seed=1, word_fraction=0.0)
    vocab = tok.get_vocab()
    banned_ids = {vocab[c] for c in banned}
    wanted_ids = {vocab[c] for c in ops.split(",")}
    seen = set()
    for i in range(len(ds)):
        seen |= set(ds[i]["input_ids"].tolist())
    assert not seen & banned_ids
    assert wanted_ids <= seen


def test_dataset_validates_arguments(tok):
    with pytest.raises(ValueError, match="15"):
        PackedArithmeticDataset(tok, "+", seq_len=15, num_rows=1, seed=0)
    with pytest.raises(ValueError, match="1.5"):
        PackedArithmeticDataset(tok, "+", seq_len=32, num_rows=1, seed=0, word_fraction=1.5)
    with pytest.raises(ValueError, match="'x'"):
        PackedArithmeticDataset(tok, "x", seq_len=32, num_rows=1, seed=0)


@pytest.mark.parametrize(
    "generated, expected",
    [
        (" 19 ", 19),
        ("19\n", 19),
        (" 1 9", 1),
        ("", None),
        ("   ", None),
        (" x", None),
        ("0", 0),
        (" -3 rest", -3),
        ("19.", None),
        ("+5", None),
        ("1_0", None),
    ],
)
def test_parse_answer(generated, expected):
    assert parse_answer(generated) == expected
