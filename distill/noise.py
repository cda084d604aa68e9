"""Shrink-and-perturb: the "Noise" of UNDO, applied to ZeRO-3 partitions in place.

For every selected parameter p:    p <- (1 - alpha) * p + alpha * beta * N
with N a fresh Xavier/Glorot-uniform draw, U(+-sqrt(6 / (fan_in + fan_out))), for 2-D weights (the tied
embedding / output matrix included) and N = 0 for 1-D parameters (norm weights, biases). alpha = 1,
beta = 1 is a fresh random init (Unlearn-and-Distill); alpha = 0 leaves the teacher unchanged.

World-size invariance: the draw for a parameter comes from its own generator, seeded by (seed, name),
over the parameter's full shape; each rank keeps the slice its ZeRO-3 partition covers. The same
elementwise arithmetic then runs on the same numbers whatever the partitioning, so the gathered result
is bit-identical on 1 or N ranks. Peak extra memory is one parameter's draw. Apply it *before*
`deepspeed.initialize`, which copies the partitions into the optimizer's fp32 master weights.
"""

from __future__ import annotations

import hashlib
import math
import re

import torch
import torch.distributed as torch_dist


def param_generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def xavier_uniform(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Glorot-uniform draw in fp32 on the CPU; fan_out = shape[0], fan_in = shape[1] (x receptive field)."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    bound = math.sqrt(6.0 / ((shape[0] + shape[1]) * receptive))
    return (torch.rand(shape, generator=gen, dtype=torch.float32) * 2.0 - 1.0) * bound


def _partition_slice(param, flat: torch.Tensor) -> torch.Tensor:
    """The part of a flattened full tensor that this rank's ZeRO-3 partition of `param` holds."""
    size = param.ds_tensor.ds_numel
    rank = torch_dist.get_rank(group=param.ds_process_group)
    start = size * rank
    out = torch.zeros(size, dtype=flat.dtype)
    if start < flat.numel():
        piece = flat[start:start + size]
        out[: piece.numel()] = piece
    return out


@torch.no_grad()
def _update(target: torch.Tensor, noise: torch.Tensor | None, alpha: float, beta: float) -> None:
    """target <- (1 - alpha) target + alpha beta noise, computed in fp32, stored in target's dtype."""
    value = target.float() * (1.0 - alpha)
    if noise is not None:
        value += (alpha * beta) * noise.to(value.device)
    target.copy_(value.to(target.dtype))


@torch.no_grad()
def shrink_and_perturb(model, alpha: float, beta: float, seed: int, pattern: str = ".*") -> list[str]:
    """Perturb the parameters whose name matches `pattern` (re.search); returns their names."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if beta < 0.0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    chosen = re.compile(pattern)
    touched = []
    for name, param in model.named_parameters():  # tied weights appear once
        if not chosen.search(name):
            continue
        shape = tuple(getattr(param, "ds_shape", param.shape))
        noise = xavier_uniform(shape, param_generator(seed, name)) if len(shape) >= 2 and beta > 0 else None
        if hasattr(param, "ds_tensor"):  # a ZeRO-3 partition is the source of truth
            flat = None if noise is None else noise.reshape(-1)
            _update(param.ds_tensor, None if flat is None else _partition_slice(param, flat), alpha, beta)
            if param.numel() == param.ds_numel:  # also gathered right now: keep both views equal
                _update(param.data, noise, alpha, beta)
        else:
            _update(param.data, noise, alpha, beta)
        touched.append(name)
    if not touched:
        raise ValueError(f"no parameter name matches the perturbation pattern {pattern!r}")
    return touched
