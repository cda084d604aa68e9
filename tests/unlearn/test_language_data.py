"""The language setting's corpora from Debian help packages: cleaning, splits, reuse, refusals."""

import io
import json
import tarfile

import pytest

from distill.errors import UserError
from unlearn import language_data as ld

KO_PAGE = """<html><head><title>t</title><script>var x = 1;</script></head><body>
<h1>색상 사용자 정의 {i}</h1><p>색상을 직접 정의하고 사용자 정의 색상표에 추가하십시오. 문서 {i}번입니다.</p>
<p>Choose Tools - AutoCorrect Options</p><p>Help content debug info: This page is: /text/x.xhp</p>
<div>관련 주제</div></body></html>"""
EN_PAGE = """<html><body><h1>Defining colours {i}</h1><p>Define a custom colour and add it to the table, page {i}.</p>
<p>Help content debug info: This page is: /text/x.xhp</p><p>Related Topics</p></body></html>"""


def ar_member(name: str, data: bytes) -> bytes:
    header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def make_deb(path, package_lang: str, pages: dict[str, str]) -> None:
    """A minimal .deb: debian-binary and a data.tar.gz holding the help pages under the package's tree."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in pages.items():
            data = text.encode()
            info = tarfile.TarInfo(f"./usr/share/libreoffice/help/{package_lang}/text/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(b"!<arch>\n" + ar_member("debian-binary", b"2.0\n") + ar_member("data.tar.gz", buf.getvalue()))


@pytest.fixture
def debs(tmp_path):
    d = tmp_path / "debs"
    d.mkdir()
    make_deb(d / "libreoffice-help-ko_7.4_all.deb", "ko", {f"p{i}.html": KO_PAGE.format(i=i) for i in range(40)})
    make_deb(d / "libreoffice-help-en-us_7.4_all.deb", "en-US", {f"p{i}.html": EN_PAGE.format(i=i) for i in range(30)})
    return d


def read(path):
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_pages_are_cleaned_split_without_overlap_and_counted(tmp_path, debs):
    out = tmp_path / "data"
    sources = ld.prepare(out, debs, min_chars=20)
    ko = {part: read(out / f"korean-{part}.jsonl") for part in ("train", "eval", "attack")}
    en = {part: read(out / f"english-{part}.jsonl") for part in ("train", "eval")}
    assert [len(ko[p]) for p in ("train", "eval", "attack")] == [32, 4, 4]
    assert [len(en[p]) for p in ("train", "eval")] == [27, 3]
    assert len(set(ko["train"]) | set(ko["eval"]) | set(ko["attack"])) == 40  # every page once
    doc = ko["train"][0]
    assert doc.startswith("색상 사용자 정의") and "AutoCorrect" not in doc and "debug" not in doc and "관련" not in doc
    assert "var x" not in doc
    assert all("Related Topics" not in d and "debug" not in d for d in en["train"])
    mix = read(out / "mix-train.jsonl")
    assert sorted(mix) == sorted(en["train"] + ko["train"]) and mix[0] == en["train"][0] and mix[1] == ko["train"][0]
    assert sources["files"]["korean-train.jsonl"]["documents"] == 32
    assert sources["packages"]["korean"]["file"] == "libreoffice-help-ko_7.4_all.deb"


def test_a_finished_directory_is_reused_and_a_changed_one_rebuilt(tmp_path, debs):
    out = tmp_path / "data"
    ld.prepare(out, debs, min_chars=20)
    before = (out / "korean-eval.jsonl").stat().st_mtime_ns
    ld.prepare(out, debs, min_chars=20)
    assert (out / "korean-eval.jsonl").stat().st_mtime_ns == before
    (out / "korean-eval.jsonl").write_text("")  # damaged: no longer what sources.json records
    ld.prepare(out, debs, min_chars=20)
    assert len(read(out / "korean-eval.jsonl")) == 4


def test_an_empty_package_or_not_a_package_is_refused(tmp_path, debs):
    make_deb(debs / "libreoffice-help-ko_7.4_all.deb", "ko", {})
    with pytest.raises(UserError, match="libreoffice-help-ko_7.4_all.deb: no korean help page"):
        ld.prepare(tmp_path / "a", debs, min_chars=20)
    (debs / "libreoffice-help-ko_7.4_all.deb").write_bytes(b"<html>not a package</html>")
    with pytest.raises(UserError, match="not a Debian package"):
        ld.prepare(tmp_path / "b", debs, min_chars=20)


def test_the_subword_tokenizer_round_trips_both_languages_and_is_deterministic(tmp_path):
    from transformers import AutoTokenizer

    from unlearn.subword import train_tokenizer

    texts = [KO_PAGE.format(i=i) for i in range(20)] + [EN_PAGE.format(i=i) for i in range(20)]
    one = AutoTokenizer.from_pretrained(train_tokenizer(texts, tmp_path / "a", vocab_size=400))
    two = AutoTokenizer.from_pretrained(train_tokenizer(texts, tmp_path / "b", vocab_size=400))
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    sample = "색상 사용자 정의: define a colour."
    assert one.decode(one(sample)["input_ids"], skip_special_tokens=True) == sample
    assert (one.pad_token_id, one.bos_token_id, one.eos_token_id) == (0, 1, 2)
    assert len(one) == 400 and two(sample)["input_ids"] == one(sample)["input_ids"]
