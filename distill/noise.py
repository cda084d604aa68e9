"""Shrink-and-perturb: the "Noise" of UNDO, applied to ZeRO-3 partitions in place.

For every selected 2-D (or larger) weight:    p <- (1 - alpha) * p + alpha * beta * N
with N a fresh Xavier/Glorot-uniform draw, U(+-sqrt(6 / (fan_in + fan_out))) (the tied embedding / output
matrix included). For every selected 1-D parameter (norm weights, biases):    p <- (1 - alpha) * p + alpha * p0
with p0 the value the architecture initialises it to, asked of the model's own `_init_weights`: 0 for
Gemma's RMSNorm (it scales by 1 + w), 1 for Llama / Qwen / Mistral RMSNorm and LayerNorm weights (they
scale by w: shrinking those toward 0 would zero every normalised activation), 0 for biases. alpha = 1,
beta = 1 is a fresh random init (Unlearn-and-Distill); alpha = 0 leaves the teacher unchanged.

World-size invariance: the draw for a parameter comes from its own generator, seeded by (seed, name),
over the parameter's full shape; each rank keeps the slice its ZeRO-3 partition covers. The same
elementwise arithmetic then runs on the same numbers whatever the partitioning, so the gathered result
is bit-identical on 1 or N ranks. Peak extra memory is one parameter's draw. Apply it *before*
`deepspeed.initialize`, which copies the partitions into the optimizer's fp32 master weights.
"""

from __future__ import annotations

import copy
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
        if len(shape) >= 2:  # toward beta x noise
            toward, weight = (xavier_uniform(shape, param_generator(seed, name)) if beta > 0 else None), alpha * beta
        else:  # toward the architecture's init
            toward, weight = init_value(model, name, seed), alpha
        if hasattr(param, "ds_tensor"):  # a ZeRO-3 partition is the source of truth
            flat = None if toward is None else toward.reshape(-1)
            _update(param.ds_tensor, None if flat is None else _partition_slice(param, flat), alpha, weight)
            if param.numel() == param.ds_numel:  # also gathered right now: keep both views equal
                _update(param.data, toward, alpha, weight)
        else:
            _update(param.data, toward, alpha, weight)
        touched.append(name)
    if not touched:
        raise ValueError(f"no parameter name matches the perturbation pattern {pattern!r}")
    return touched
