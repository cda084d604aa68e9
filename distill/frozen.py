"""A frozen model (the unlearning reference, an online teacher) that takes no gradient.

Under ZeRO-3 it becomes a DeepSpeed engine with no optimizer: its weights stay partitioned across
ranks and are gathered layer by layer during the forward, as for the trained model, instead of a
full copy on every rank. Under ZeRO-0/1/2 there is nothing to partition, so it stays a plain module.
Every rank must call its forward the same number of times under ZeRO-3.
"""

from __future__ import annotations

import copy

import torch

from distill.ds_config import zero_stage
from distill.models import build_model


def frozen_ds_config(ds_config: dict) -> dict:
    """The trained model's config minus what only an optimizer uses (no offload of optimizer state)."""
    cfg = copy.deepcopy(ds_config)
    cfg.get("zero_optimization", {}).pop("offload_optimizer", None)
    cfg.pop("gradient_clipping", None)
    return cfg


def build_frozen(spec: str, tokenizer, ds_config: dict, device, dtype=torch.float32, wrap=None):
    """Load `spec` for inference only: requires_grad off, eval mode, partitioned under ZeRO-3. `wrap`
    (model -> module) puts it in the module its callers call, e.g. one with a loss head."""
    cfg = frozen_ds_config(ds_config)
    model = build_model(spec, tokenizer, cfg, dtype=dtype)
    if wrap is not None:
        model = wrap(model)
    model.requires_grad_(False)
    model.eval()
    if zero_stage(cfg) != 3:
        return model.to(device)
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, config=cfg)
    engine.eval()
    return engine
