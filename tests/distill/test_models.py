import pytest
import torch
from transformers import LlamaConfig

from distill.errors import UserError
from distill.models import PRESETS, build_model, check_tokenizer_matches, count_parameters, model_config
from unlearn.tasks.tokenizer import build_char_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.mark.parametrize("name,low,high", [("gemma2-tiny", 0.9e6, 1.1e6), ("gemma2-0.1b", 0.09e9, 0.12e9),
                                           ("gemma2-0.3b", 0.3e9, 0.38e9)])
def test_presets_have_the_stated_sizes(tok, name, low, high):
    config = model_config(name, tok)
    assert config.model_type == "gemma2" and config.tie_word_embeddings
    with torch.device("meta"):
        model = build_model(name, tok)
    assert low <= count_parameters(model) <= high


def test_paper_presets_keep_gemma_vocabulary(tok):
    assert model_config("gemma2-0.3b", tok).vocab_size == 256000
    assert model_config("gemma2-tiny", tok).vocab_size == len(tok)
    assert set(PRESETS) >= {"gemma2-tiny", "gemma2-0.1b", "gemma2-0.3b"}


def test_unknown_preset_names_the_choices(tok):
    with pytest.raises(UserError, match=r"unknown model preset 'gemma2-huge'.*gemma2-tiny"):
        model_config("gemma2-huge", tok)


def test_missing_directory_and_missing_config(tok, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        model_config(str(tmp_path / "absent"), tok)
    with pytest.raises(UserError, match="has no config.json"):
        model_config(str(tmp_path), tok)


def test_config_only_directory_is_a_fresh_init_of_that_architecture(tok, tmp_path):
    LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1).save_pretrained(tmp_path)
    model = build_model(str(tmp_path), tok)
    assert type(model).__name__ == "LlamaForCausalLM"
    out = model(input_ids=torch.tensor([[1, 5, 6]]))
    assert out.logits.shape == (1, 3, len(tok))


def test_vocab_smaller_than_tokenizer_is_refused(tok, tmp_path):
    LlamaConfig(vocab_size=10, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(UserError, match=r"vocab_size 10 but the tokenizer has 77 tokens"):
        build_model(str(tmp_path), tok)


def test_pickled_weights_are_refused(tok, tmp_path):
    LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2).save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UserError, match="pickled weights"):
        build_model(str(tmp_path), tok)


def test_a_different_tokenizer_in_the_model_directory_is_refused(tok, tmp_path):
    other = build_char_tokenizer()
    other.add_tokens(["<extra>"])
    other.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="tokenizer mismatch"):
        check_tokenizer_matches(str(tmp_path), tok)
    tok.save_pretrained(tmp_path / "same")
    check_tokenizer_matches(str(tmp_path / "same"), tok)


@pytest.mark.parametrize("name,shape", [
    ("gemma2-2b", dict(hidden_size=2304, num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                       intermediate_size=9216)),
    ("gemma2-9b", dict(hidden_size=3584, num_hidden_layers=42, num_attention_heads=16, num_key_value_heads=8,
                       intermediate_size=14336)),
])
def test_public_presets_match_the_public_configs_without_a_tokenizer(tok, name, shape):
    config = model_config(name)
    public = dict(head_dim=256, vocab_size=256000, query_pre_attn_scalar=256, max_position_embeddings=8192,
                  sliding_window=4096, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
                  hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, tie_word_embeddings=True,
                  pad_token_id=0, eos_token_id=1, bos_token_id=2, **shape)
    assert {k: getattr(config, k) for k in public} == public
    assert config.layer_types[:2] == ["sliding_attention", "full_attention"]
    assert model_config(name, tok).vocab_size == 256000  # a tokenizer does not shrink the public vocabulary


def test_small_presets_are_unchanged_and_a_tokenizer_vocab_needs_a_tokenizer(tok):
    config = model_config("gemma2-0.3b", tok)
    assert (config.max_position_embeddings, config.sliding_window, config.query_pre_attn_scalar) == (4096, 4096, 128)
    assert config.pad_token_id == tok.pad_token_id
    with pytest.raises(UserError, match="'gemma2-tiny' takes its vocabulary size from the tokenizer"):
        model_config("gemma2-tiny")
