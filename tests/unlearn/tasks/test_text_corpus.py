"""Text corpora through `datasets`: every file kind, clear refusals, rows that do not depend on map processes,
a second run from the cache, and a seeded held-out split."""

import json

import pytest
import torch
from text_helpers import ENGLISH, documents, make_corpora, write_jsonl, write_parquet, write_text
from transformers import AutoTokenizer

from distill.errors import UserError
from unlearn.tasks.text_corpus import DocumentRows, PackedRows, load_corpus, split_corpus, tokenize


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return make_corpora(tmp_path_factory.mktemp("corpora"))


@pytest.fixture(scope="module")
def tok(corpora):
    return AutoTokenizer.from_pretrained(corpora["tokenizer"])


@pytest.fixture(autouse=True)
def _own_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def test_every_file_kind_gives_the_same_documents(tmp_path):
    docs = documents(ENGLISH, 12, seed=3)
    paths = [write_jsonl(tmp_path / "a.jsonl", docs, field="body"), write_parquet(tmp_path / "a.parquet", docs,
                                                                                   field="body")]
    (tmp_path / "a.csv").write_text("body,n\n" + "".join(f'"{d}",{i}\n' for i, d in enumerate(docs)))
    paths.append(tmp_path / "a.csv")
    for path in paths:
        assert load_corpus(str(path), "body", "--data")["text"] == docs, path
    assert load_corpus(str(write_text(tmp_path / "a.txt", docs)), "ignored", "--data")["text"] == docs
    saved = tmp_path / "saved"
    load_corpus(str(paths[0]), "body", "--data").save_to_disk(str(saved))
    assert load_corpus(str(saved), "text", "--data")["text"] == docs


def test_a_glob_reads_its_files_in_name_order(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", ["second file."])
    write_jsonl(tmp_path / "a.jsonl", ["first file."])
    assert load_corpus(str(tmp_path / "*.jsonl"), "text", "--data")["text"] == ["first file.", "second file."]


@pytest.mark.parametrize("case, message", [
    ("missing", "--data {dir}/none.jsonl: no such file"),
    ("empty", "the corpus is empty"),
    ("blank", "the corpus is empty"),
    ("field", "no field 'text' (fields: body, id)"),
    ("bytes", "--data {dir}/bad.txt: not UTF-8 text"),
    ("kind", "cannot read {dir}/a.docx"),
    ("plain-dir", "is a directory but not one written by Dataset.save_to_disk"),
])
def test_bad_corpora_are_refused_naming_the_flag_and_file(tmp_path, case, message):
    spec = {"missing": tmp_path / "none.jsonl", "empty": tmp_path / "empty.jsonl", "blank": tmp_path / "blank.jsonl",
            "field": tmp_path / "f.jsonl", "bytes": tmp_path / "bad.txt", "kind": tmp_path / "a.docx",
            "plain-dir": tmp_path}[case]
    if case == "empty":
        spec.write_text("")
    if case == "blank":
        write_jsonl(spec, ["", "   "])
    if case == "field":
        write_jsonl(spec, ["x"], field="body")
    if case == "bytes":
        spec.write_bytes(b"fine text\n\n\xff\xfe broken \xc3\x28\n")
    if case == "kind":
        spec.write_text("x")
    with pytest.raises(UserError, match=None) as err:
        load_corpus(str(spec), "text", "--data")
    assert message.format(dir=tmp_path) in str(err.value), str(err.value)


def test_packed_rows_are_the_concatenated_documents_cut_into_rows(corpora, tok):
    ds = load_corpus(str(corpora["retain"]), "text", "--data")
    rows = PackedRows(tokenize(ds, tok), seq_len=16)
    stream = []
    for text in ds["text"]:
        stream += [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(rows) == len(stream) // 16 and rows.tokens == len(stream)
    for i in (0, 1, len(rows) // 2, len(rows) - 1):
        assert rows[i]["input_ids"].tolist() == stream[16 * i: 16 * (i + 1)]
        assert torch.equal(rows[i]["labels"], rows[i]["input_ids"])


def test_rows_do_not_depend_on_the_number_of_map_processes(corpora, tok):
    ds = load_corpus(str(corpora["mix"]), "text", "--data")
    one, two = PackedRows(tokenize(ds, tok, num_proc=1), 24), PackedRows(tokenize(ds, tok, num_proc=2), 24)
    assert len(one) == len(two) > 10
    assert all(torch.equal(one[i]["input_ids"], two[i]["input_ids"]) for i in range(len(one)))


def test_a_second_run_reads_the_tokenised_corpus_from_the_cache(corpora, tok):
    ds = load_corpus(str(corpora["retain"]), "text", "--data")
    first = tokenize(ds, tok)
    files = [f["filename"] for f in first.cache_files]
    stamps = [__import__("os").stat(f).st_mtime_ns for f in files]
    again = tokenize(load_corpus(str(corpora["retain"]), "text", "--data"), tok)
    assert [f["filename"] for f in again.cache_files] == files and again._fingerprint == first._fingerprint
    assert [__import__("os").stat(f).st_mtime_ns for f in files] == stamps  # not written again


def test_another_tokenizer_or_corpus_gives_another_fingerprint(corpora, tok, tmp_path):
    from text_helpers import train_tokenizer

    ds = load_corpus(str(corpora["retain"]), "text", "--data")
    other_tok = AutoTokenizer.from_pretrained(train_tokenizer(tmp_path / "t2", ENGLISH, vocab_size=300))
    other_corpus = load_corpus(str(corpora["forget"]), "text", "--data")
    prints = {PackedRows(tokenize(d, t), 16).fingerprint for d, t in ((ds, tok), (ds, other_tok), (other_corpus, tok))}
    assert len(prints) == 3


def test_a_corpus_shorter_than_one_row_is_refused(tmp_path, tok):
    ds = load_corpus(str(write_jsonl(tmp_path / "short.jsonl", ["tiny."])), "text", "--data")
    with pytest.raises(UserError, match="do not fill one row of 512 tokens"):
        PackedRows(tokenize(ds, tok), 512, what="--data short.jsonl")


def test_the_held_out_split_is_seeded_disjoint_and_never_empty(corpora):
    ds = load_corpus(str(corpora["forget"]), "text", "--forget-data")
    train, held = split_corpus(ds, 0.1, seed=0)
    again_train, again_held = split_corpus(ds, 0.1, seed=0)
    assert held["text"] == again_held["text"] and train["text"] == again_train["text"]
    assert len(held) == 6 and len(train) == 54 and not set(held["text"]) & set(train["text"])
    assert split_corpus(ds, 0.1, seed=1)[1]["text"] != held["text"]
    assert len(split_corpus(ds.select(range(3)), 0.01, seed=0)[1]) == 1


def test_document_rows_are_truncated_not_packed(corpora, tok):
    ds = load_corpus(str(corpora["forget"]), "text", "--forget-data")
    rows = DocumentRows(tokenize(ds, tok), seq_len=8)
    assert len(rows) == len(ds)
    first = rows[0]["input_ids"].tolist()
    assert first[0] == tok.bos_token_id and len(first) == 8
    assert json.dumps(first)  # plain ints
