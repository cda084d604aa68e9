"""Text rows: documents packed as <bos> text <eos>, cut into full rows, the project's own text as source."""

import pytest
import torch

from distill.text_rows import TextRowsDataset, pack_documents, project_texts
from unlearn.tasks.tokenizer import BOS_ID, EOS_ID, build_char_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def test_pack_documents_concatenates_and_drops_the_partial_row():
    rows = pack_documents([[10, 11, 12], [20], [30, 31]], seq_len=4, bos_id=1, eos_id=2)
    # stream: 1 10 11 12 2 | 1 20 2 | 1 30 31 2  -> 12 tokens, 3 rows of 4
    assert rows.tolist() == [[1, 10, 11, 12], [2, 1, 20, 2], [1, 30, 31, 2]]
    assert pack_documents([[5, 6, 7]], seq_len=3, bos_id=None, eos_id=2).tolist() == [[5, 6, 7]]  # 2 dropped
    assert pack_documents([[5]], seq_len=8, bos_id=1, eos_id=2).shape == (0, 8)


def test_rows_hold_the_documents_with_bos_and_eos(tokenizer):
    docs = [("a", "12 + 3 = 15."), ("b", "Seven minus two is five.")]
    ds = TextRowsDataset(tokenizer, docs, seq_len=8)
    stream = torch.cat([ds[i]["input_ids"] for i in range(len(ds))]).tolist()
    expected = []
    for _, text in docs:
        expected += [BOS_ID, *tokenizer(text, add_special_tokens=False)["input_ids"], EOS_ID]
    assert len(ds) == len(expected) // 8 and stream == expected[: len(ds) * 8]
    for i in range(len(ds)):
        item = ds[i]
        assert item["input_ids"].dtype == torch.long and item["input_ids"].shape == (8,)
        assert torch.equal(item["labels"], item["input_ids"])
    assert ds.tokens == len(expected) - 2 * len(docs)


def test_items_are_copies_and_out_of_range_is_refused(tokenizer):
    ds = TextRowsDataset(tokenizer, [("a", "0123456789" * 4)], seq_len=16)
    ds[0]["input_ids"][0] = 99  # a consumer that edits its batch must not edit the dataset
    assert ds[0]["input_ids"][0] == BOS_ID
    with pytest.raises(IndexError, match=r"row index 2 out of range \[0, 2\)"):
        ds[2]


def test_max_rows_and_bad_options(tokenizer):
    docs = [("a", "0123456789" * 10)]
    assert len(TextRowsDataset(tokenizer, docs, seq_len=16)) == 6
    assert len(TextRowsDataset(tokenizer, docs, seq_len=16, max_rows=4)) == 4
    with pytest.raises(ValueError, match="do not fill one row of 200 tokens"):
        TextRowsDataset(tokenizer, docs, seq_len=200)
    with pytest.raises(ValueError, match="seq_len must be >= 2"):
        TextRowsDataset(tokenizer, docs, seq_len=1)
    with pytest.raises(ValueError, match="max_rows must be >= 1"):
        TextRowsDataset(tokenizer, docs, seq_len=16, max_rows=0)


def test_description_follows_the_text(tokenizer):
    a = TextRowsDataset(tokenizer, [("a", "0123456789" * 4)], seq_len=8).description()
    assert a == TextRowsDataset(tokenizer, [("a", "0123456789" * 4)], seq_len=8).description()
    assert a["kind"] == "text-rows" and a["rows"] == 5 and a["seq_len"] == 8
    assert a["text_sha256"] != TextRowsDataset(tokenizer, [("a", "0123456789" * 4 + "!")], seq_len=8).description()[
        "text_sha256"]


def test_project_texts_reads_readme_and_module_docstrings(tmp_path):
    (tmp_path / "README.md").write_text("# Title\n")
    pkg = tmp_path / "distill"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "b.py").write_text('"""Module b."""\nX = 1\n')
    (pkg / "a.py").write_text("X = 1  # no docstring: skipped\n")
    (pkg / "sub" / "c.py").write_text('"""Module c,\n\n    indented."""\n')
    assert project_texts(tmp_path) == [("README.md", "# Title\n"), ("distill/b.py", "Module b."),
                                       ("distill/sub/c.py", "Module c,\n\nindented.")]
    with pytest.raises(ValueError, match="no README.md and no documented modules"):
        project_texts(tmp_path / "distill")


def test_the_repository_gives_enough_text():
    docs = project_texts()
    assert docs[0][0] == "README.md" and len(docs) > 20
    assert sum(len(text) for _, text in docs) > 20_000  # characters: several thousand tokens
