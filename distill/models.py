"""Model specs: a named Gemma-2 preset or any Hugging Face causal-LM directory.

Under ZeRO-3 the model is partitioned while it is built: a `HfDeepSpeedConfig` kept alive during
`from_config` / `from_pretrained` makes transformers construct it inside `deepspeed.zero.Init`, so no
rank ever holds the whole model.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, Gemma2Config, PretrainedConfig

from distill.errors import UserError

# Gemma-2 architecture at the paper's sizes. vocab_size None means "the tokenizer's size" (the
# arithmetic testbed's character vocabulary); the paper's models keep Gemma's 256k vocabulary.
PRESETS: dict[str, dict] = {
    # ~1M parameters: the testbed model of the tests and the demo.
    "gemma2-tiny": dict(hidden_size=128, num_hidden_layers=4, intermediate_size=512, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=32, vocab_size=None),
    # The paper's language-setting model: 14 layers, hidden 320.
    "gemma2-0.1b": dict(hidden_size=320, num_hidden_layers=14, intermediate_size=1280, num_attention_heads=5,
                        num_key_value_heads=5, head_dim=64, vocab_size=256000),
    # The paper's arithmetic model: 14 layers, hidden 768, MLP 3072, 8 heads x 128.
    "gemma2-0.3b": dict(hidden_size=768, num_hidden_layers=14, intermediate_size=3072, num_attention_heads=8,
                        num_key_value_heads=8, head_dim=128, vocab_size=256000),
    # The public google/gemma-2-2b and google/gemma-2-9b config.json shapes (2.61B and 9.24B parameters
    # with the tied embedding counted once). Their other fields (GELU-tanh, RMSNorm eps 1e-6, RoPE theta
    # 1e4, alternating sliding/full layers) are Gemma2Config's defaults; the ones that differ from the
    # small presets, or matter to the loss (softcaps), are spelled out.
    "gemma2-2b": dict(hidden_size=2304, num_hidden_layers=26, intermediate_size=9216, num_attention_heads=8,
                      num_key_value_heads=4, head_dim=256, vocab_size=256000, query_pre_attn_scalar=256,
                      max_position_embeddings=8192, sliding_window=4096, final_logit_softcapping=30.0,
                      attn_logit_softcapping=50.0),
    "gemma2-9b": dict(hidden_size=3584, num_hidden_layers=42, intermediate_size=14336, num_attention_heads=16,
                      num_key_value_heads=8, head_dim=256, vocab_size=256000, query_pre_attn_scalar=256,
                      max_position_embeddings=8192, sliding_window=4096, final_logit_softcapping=30.0,
                      attn_logit_softcapping=50.0),
}
# What a preset leaves out: the paper's small models train on at most 4096 positions.
PRESET_DEFAULTS = dict(max_position_embeddings=4096, sliding_window=4096)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def preset_config(name: str, tokenizer=None) -> Gemma2Config:
    """The preset's config. Without a tokenizer the special-token ids are Gemma's own (pad 0, eos 1, bos 2),
    and a preset that takes its vocabulary from the tokenizer is refused."""
    if name not in PRESETS:
        raise UserError(f"unknown model preset {name!r}: expected one of {', '.join(PRESETS)} or a model directory")
    shape = {**PRESET_DEFAULTS, **PRESETS[name]}
    shape.setdefault("query_pre_attn_scalar", shape["head_dim"])
    vocab = shape.pop("vocab_size")
    if vocab is None and tokenizer is None:
        raise UserError(f"model preset {name!r} takes its vocabulary size from the tokenizer, and none was given")
    ids = {} if tokenizer is None else dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                            eos_token_id=tokenizer.eos_token_id)
    return Gemma2Config(vocab_size=vocab or len(tokenizer), tie_word_embeddings=True, **ids, **shape)


def is_model_dir(spec: str) -> bool:
    return spec not in PRESETS and ("/" in spec or Path(spec).exists())


def model_config(spec: str, tokenizer=None) -> PretrainedConfig:
    """The config a spec names, without building any weights."""
    if not is_model_dir(spec):
        return preset_config(spec, tokenizer)
    path = Path(spec)
    if not path.is_dir():
        raise UserError(f"model directory {spec} does not exist "
                        "(expected a preset name or a directory with config.json)")
    if not (path / "config.json").is_file():
        raise UserError(f"model directory {spec} has no config.json (expected a Hugging Face checkpoint directory)")
    return AutoConfig.from_pretrained(path, trust_remote_code=False)


def has_weights(spec: str) -> bool:
    return is_model_dir(spec) and any((Path(spec) / f).is_file() for f in WEIGHT_FILES)


def check_vocab(config: PretrainedConfig, tokenizer, spec: str) -> None:
    if config.vocab_size < len(tokenizer):
        raise UserError(
            f"model {spec} has vocab_size {config.vocab_size} but the tokenizer has {len(tokenizer)} tokens: "
            "the embedding cannot hold every token id"
        )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def check_tokenizer_matches(spec: str, tokenizer) -> None:
    """A model directory that ships a tokenizer must ship the one the run's data is encoded with."""
    if not is_model_dir(spec) or not any((Path(spec) / f).is_file() for f in TOKENIZER_FILES):
        return
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(spec, trust_remote_code=False)
    if theirs.get_vocab() != tokenizer.get_vocab():
        raise UserError(
            f"tokenizer mismatch: {spec} ships a tokenizer of {len(theirs)} tokens that differs from the run's "
            f"({len(tokenizer)} tokens); token ids would be misread"
        )


def build_model(spec: str, tokenizer, ds_config: dict | None = None, dtype=torch.float32):
    """Build (or load) the model; partitioned during construction when ds_config is ZeRO-3.

    A directory with safetensors weights is loaded; a directory with only config.json is a fresh
    random init of that architecture. Pickled weights (`pytorch_model.bin`) are refused.
    """
    config = model_config(spec, tokenizer)
    check_vocab(config, tokenizer, spec)
    if getattr(config, "model_type", "") == "gemma2":
        config._attn_implementation = "eager"  # Gemma-2 has no SDPA path in transformers (softcapping)
    with _zero3_construction(ds_config):
        if has_weights(spec):
            return AutoModelForCausalLM.from_pretrained(
                spec, config=config, dtype=dtype, use_safetensors=True, trust_remote_code=False)
        if is_model_dir(spec) and (Path(spec) / "pytorch_model.bin").exists():
            raise UserError(f"model directory {spec} holds pickled weights (pytorch_model.bin); "
                            "convert them to safetensors")
        return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)


@contextlib.contextmanager
def _zero3_construction(ds_config: dict | None):
    """Keep transformers' DeepSpeed hook alive while the model is built, and only then."""
    if ds_config is None or ds_config.get("zero_optimization", {}).get("stage") != 3:
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    hook = HfDeepSpeedConfig(ds_config)  # noqa: F841 (its existence is the signal)
    try:
        yield
    finally:
        del hook
        unset_hf_deepspeed_config()


def build_meta_model(spec: str, tokenizer=None, dtype=torch.bfloat16):
    """The spec's model on the meta device: every shape, no storage (a 9B model builds in seconds in no
    memory), for counting parameters and tracing memory. Attention as ``build_model`` sets it."""
    config = model_config(spec, tokenizer)
    if getattr(config, "model_type", "") == "gemma2":
        config._attn_implementation = "eager"
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)


def count_parameters(model) -> int:
    """Parameter count that also works on ZeRO-3 partitions (which report numel 0 locally)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += getattr(p, "ds_numel", p.numel())
    return total
