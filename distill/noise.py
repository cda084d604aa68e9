"""Shrink-and-perturb: the "Noise" of UNDO, applied to ZeRO-3 partitions in place.

For every selected 2-D (or larger) weight:    p <- (1 - alpha) * p + alpha * beta * N
with N a fresh Xavier/Glorot-uniform draw, U(+-sqrt(6 / (fan_in + fan_out))) (the tied embedding / output
matrix included). For every selected 1-D parameter (norm weights, biases):    p <- (1 - alpha) * p + alpha * p0
with p0 the value the architecture initialises it to, asked of the model's own `_init_weights`: 0 for
Gemma's RMSNorm (it scales by 1 + w), 1 for Llama / Qwen / Mistral RMSNorm and LayerNorm weights (they
scale by w: shrinking those toward 0 would zero every normalised activation), 0 for biases. alpha = 1,
beta = 1 is a fresh random init (Unlearn-and-Distill); alpha = 0 leaves the teacher unchanged.

World-size invariance and memory: a weight's noise is drawn over its flattened elements in blocks of
BLOCK elements, block b from its own generator seeded by (seed, name, b). A rank draws only the blocks
its ZeRO-3 partition covers and keeps the slice it holds, one block at a time, so the peak extra memory
is a block (16 MiB of fp32), not the parameter (a 256,000 x 3,584 embedding is 3.7 GB), and the same
elementwise arithmetic runs on the same numbers whatever the partitioning: the gathered result is
bit-identical on 1 or N ranks. Block 0 keeps the generator of (seed, name), so a weight of at most BLOCK
elements gets the same draw as before blocks existed. Apply it *before* `deepspeed.initialize`, which
copies the partitions into the optimizer's fp32 master weights.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re

import torch

from distill.dist import weight_views

BLOCK = 1 << 22  # elements per noise block: 16 MiB of fp32


def param_generator(seed: int, name: str, block: int = 0) -> torch.Generator:
    key = f"{seed}:{name}" if block == 0 else f"{seed}:{name}:{block}"
    digest = hashlib.sha256(key.encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def xavier_bound(shape: tuple[int, ...]) -> float:
    """Glorot-uniform bound sqrt(6 / (fan_in + fan_out)); fan_out = shape[0], fan_in = shape[1] (x receptive field)."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return math.sqrt(6.0 / ((shape[0] + shape[1]) * receptive))


def xavier_block(shape: tuple[int, ...], seed: int, name: str, block: int) -> torch.Tensor:
    """Block `block` of the flattened Glorot-uniform draw for parameter `name` (fp32, CPU, 1-D)."""
    numel = math.prod(shape)
    size = min(BLOCK, numel - block * BLOCK)
    if size <= 0:
        raise ValueError(f"block {block} lies beyond the {numel} elements of {name}")
    return (torch.rand(size, generator=param_generator(seed, name, block)) * 2.0 - 1.0) * xavier_bound(shape)


def xavier_uniform(shape: tuple[int, ...], seed: int, name: str) -> torch.Tensor:
    """The whole draw for `name` (tests and small parameters; the update itself goes block by block)."""
    numel = math.prod(shape)
    blocks = [xavier_block(shape, seed, name, b) for b in range(-(-numel // BLOCK))]
    return torch.cat(blocks).view(shape)


def _apply_blocks(flat: torch.Tensor, start: int, shape, seed: int, name: str, alpha: float, weight: float) -> None:
    """flat holds elements [start, start + len) of the flattened parameter; mix in beta x noise, block by
    block, drawing only the blocks that range covers (elements past the parameter's end are padding)."""
    end = max(min(start + flat.numel(), math.prod(shape)), start)  # end == start: this rank holds only padding
    for b in range(start // BLOCK, -(-end // BLOCK)):
        lo, hi = max(start, b * BLOCK), min(end, (b + 1) * BLOCK)
        noise = xavier_block(shape, seed, name, b)[lo - b * BLOCK: hi - b * BLOCK]
        _update(flat[lo - start: hi - start], noise, alpha, weight)
    if end - start < flat.numel():  # the tail of the last rank's partition: padding, shrunk like the rest
        _update(flat[end - start:], None, alpha, weight)


@torch.no_grad()
def _update(target: torch.Tensor, toward: torch.Tensor | None, alpha: float, weight: float) -> None:
    """target <- (1 - alpha) target + weight toward (None: 0), computed in fp32, stored in target's dtype."""
    value = target.float() * (1.0 - alpha)
    if toward is not None:
        value += weight * toward.to(value.device)
    target.copy_(value.to(target.dtype))


def _owner(model, name: str) -> tuple[torch.nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


@torch.no_grad()
def init_value(model, name: str, seed: int) -> torch.Tensor:
    """The value a fresh init of `model`'s architecture gives the 1-D parameter `name` (fp32, full shape).

    The owning module is copied without its tensors (fresh placeholders: NaN for 1-D, meta for the rest,
    so nothing of the model is touched or gathered) and initialised by the model's own `_init_weights`,
    or the module's `reset_parameters` outside Hugging Face. A random init draws from (seed, name)."""
    module, attr = _owner(model, name)
    clone = copy.copy(module)
    clone._modules = {}
    clone._buffers = {k: None if b is None else b.detach().clone() for k, b in module._buffers.items()}
    clone._parameters = {}
    for key, p in module._parameters.items():
        shape = tuple(getattr(p, "ds_shape", p.shape)) if p is not None else None
        clone._parameters[key] = None if p is None else torch.nn.Parameter(
            torch.full(shape, float("nan")) if len(shape) == 1 else torch.empty(shape, device="meta"))
    init = getattr(model, "_init_weights", None) or (lambda m: m.reset_parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(param_generator(seed, name).initial_seed())
        try:
            init(clone)
        except AttributeError as e:
            raise ValueError(f"cannot tell the initial value of {name}: {type(module).__name__} has no init") from e
    value = clone._parameters[attr].detach().float()
    if torch.isnan(value).any():
        raise ValueError(f"cannot tell the initial value of {name}: the model's init leaves "
                         f"{type(module).__name__}.{attr} untouched")
    return value


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
        views = weight_views(param)  # the ZeRO-3 partition, and the gathered copy if any: kept equal
        init = init_value(model, name, seed).reshape(-1) if len(shape) < 2 else None  # once for both views
        for flat, start in views:
            if init is not None:  # toward the architecture's init (small: held whole)
                toward = init[start: start + flat.numel()]
                _update(flat[: toward.numel()], toward, alpha, alpha)
                _update(flat[toward.numel():], None, alpha, alpha)
            elif beta > 0:  # toward beta x noise, a block at a time
                _apply_blocks(flat, start, shape, seed, name, alpha, alpha * beta)
            else:
                _update(flat, None, alpha, 0.0)
        touched.append(name)
    if not touched:
        raise ValueError(f"no parameter name matches the perturbation pattern {pattern!r}")
    return touched
