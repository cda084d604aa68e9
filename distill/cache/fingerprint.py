"""Fingerprints that tie a cache to the teacher, tokenizer and dataset it was computed from.

Each is a sha256 hex digest of canonical JSON or file bytes, so it is the same on any machine:
- teacher: config.json (minus the fields that name the writing library or path) and the bytes of
  every safetensors weight file;
- tokenizer: the full vocabulary (token -> id) and the special tokens;
- dataset: a stable description (kind, options, number of records) and the token ids of probe
  records spread over the whole dataset, so a changed generator or file shows up too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from distill.errors import UserError

_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "architectures_version")
_PROBES = 16


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a Hugging Face model directory, in a fixed order."""
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / n for n in names]
    raise UserError(f"teacher {model_dir} has no safetensors weights (model.safetensors or its index): "
                    "a teacher must be a trained Hugging Face model directory")


def teacher_fingerprint(model_dir: str | Path) -> str:
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"teacher {model_dir} has no config.json (expected a Hugging Face model directory)")
    config = {k: v for k, v in json.loads(config_path.read_text()).items() if k not in _VOLATILE_CONFIG_KEYS}
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for path in weight_files(model_dir):
        h.update(path.name.encode())
        _hash_file(h, path)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    specials = {name: [getattr(tokenizer, name, None), getattr(tokenizer, name + "_id", None)]
                for name in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return sha256_json({"vocab": sorted(tokenizer.get_vocab().items()), "specials": specials})


def probe_indices(n: int) -> list[int]:
    """Up to 16 record indices spread evenly over [0, n), first and last included."""
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(n, _PROBES))}) if n else []


def dataset_fingerprint(dataset, description: dict) -> str:
    """Fingerprint of a map-style dataset whose items hold "input_ids" (a 1-D integer tensor or array)."""
    n = len(dataset)
    h = hashlib.sha256(json.dumps({"description": description, "records": n}, sort_keys=True).encode())
    for i in probe_indices(n):
        ids = np.asarray(dataset[i]["input_ids"], dtype="<i8")
        h.update(f"{i}:{len(ids)}:".encode())
        h.update(ids.tobytes())
    return h.hexdigest()
