"""The teacher as a ZeRO-3 inference engine: partitioned while built, no optimizer, eval, no_grad."""

from __future__ import annotations

import torch

from distill.ds_config import RunShape, resolve_ds_config
from distill.models import build_model, check_tokenizer_matches, model_config


def teacher_forward(teacher_dir: str, tokenizer, ds_config_path: str, micro_batch: int, world_size: int,
                    device: torch.device, precision: str):
    """(forward, config): forward maps input_ids (B, T) int64 to logits (B, T, V) on `device`, V the
    tokenizer's size: rows of the output matrix past the tokenizer are padding that no text contains, left
    out as the online loss and the student's head leave them out, so no cached id can land there.

    The DeepSpeed config's "auto" batch values are filled for micro_batch per rank (no accumulation);
    gradient clipping is irrelevant without an optimizer and is filled with 1.0."""
    check_tokenizer_matches(teacher_dir, tokenizer)
    config = model_config(teacher_dir, tokenizer)
    shape = RunShape(micro_batch * world_size, micro_batch, world_size, precision, 1.0, config.hidden_size)
    ds_config = resolve_ds_config(ds_config_path, shape)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = build_model(teacher_dir, tokenizer, ds_config, dtype=dtype)
    model.requires_grad_(False)
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, config=ds_config)
    engine.eval()
    vocab = len(tokenizer)

    def forward(input_ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return engine(input_ids=input_ids.to(device), use_cache=False).logits[..., :vocab]  # a view

    return forward, config
