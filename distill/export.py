"""Export a (possibly ZeRO-3-partitioned) model as a Hugging Face directory.

Parameters are gathered one at a time, so no rank needs more than one parameter beyond its partition
while gathering; rank 0 collects them on the CPU and writes safetensors, config.json and the
tokenizer into a temporary directory, then moves each file into place with the config last, so a
reader never finds a config.json without its weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from distill import dist


def gathered_state_dict(model, rank: int) -> dict[str, torch.Tensor]:
    """Full CPU state dict on rank 0 (empty elsewhere). Every rank must call this."""
    import deepspeed

    state: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():  # tied weights appear once
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            if rank == 0:
                state[name] = param.data.detach().to("cpu", copy=True).contiguous()
    params = {n for n, _ in model.named_parameters()}
    for name, buf in model.state_dict(keep_vars=True).items():  # persistent buffers, if any
        if name not in params and name not in state and rank == 0 and isinstance(buf, torch.Tensor):
            if not any(buf is p for p in model.parameters()):
                state[name] = buf.detach().to("cpu", copy=True).contiguous()
    return state


def export_hf(model, tokenizer, out: Path, rank: int) -> None:
    """Write `out` as a Hugging Face model directory (config.json, model.safetensors, tokenizer)."""
    state = gathered_state_dict(model, rank)
    if rank == 0:
        tmp = out / ".export.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp, state_dict=state)
        tokenizer.save_pretrained(tmp)
        files = sorted(tmp.iterdir(), key=lambda p: p.name == "config.json")
        for f in files:
            f.replace(out / f.name)
        tmp.rmdir()
    dist.barrier()
