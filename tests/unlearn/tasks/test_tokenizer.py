import pytest
from transformers import AutoTokenizer

from unlearn.tasks.tokenizer import CHARS, SPECIAL_TOKENS, build_char_tokenizer, encode_text

SAMPLE = "  Mia has 12 shells . , ? it's 3-4 x: 5 + 6 * 7 / 8 = 9  "


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def test_vocab_ids_fixed(tok):
    vocab = tok.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert [vocab[c] for c in CHARS] == list(range(4, 4 + len(CHARS)))
    assert len(tok) == 4 + len(CHARS)
    assert len(set(CHARS)) == len(CHARS)
    assert tok.padding_side == "right"


def test_one_token_per_char_and_exact_round_trip(tok):
    ids = tok.encode(SAMPLE, add_special_tokens=False)
    assert len(ids) == len(SAMPLE)
    assert tok.decode(ids) == SAMPLE
    assert ids == encode_text(tok, SAMPLE)


def test_no_special_tokens_added(tok):
    assert tok.encode("12", add_special_tokens=True) == tok.encode("12", add_special_tokens=False)
    assert 1 not in tok("1 + 2 =")["input_ids"]


def test_save_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.encode(SAMPLE, add_special_tokens=False) == encode_text(tok, SAMPLE)
    assert loaded.decode(loaded.encode(SAMPLE, add_special_tokens=False)) == SAMPLE
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)
    assert loaded.encode("7", add_special_tokens=True) == [tok.get_vocab()["7"]]


def test_encode_text_rejects_unknown_characters(tok):
    with pytest.raises(ValueError, match="'!'"):
        encode_text(tok, "hi there!")
    with pytest.raises(ValueError, match=r"'\\n'"):
        encode_text(tok, "a\nb")
