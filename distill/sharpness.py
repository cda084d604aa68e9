"""Sharpness-aware steps: move the weights to the worst case within radius rho, take the gradient there.

One optimizer step of SAM (sharpness-aware minimisation) on a loss L at weights w:

    g = grad L(w);   e = rho * g / ||g||;   step with grad L(w + e), applied to w (not to w + e)

The engine runs the step's micro-batches twice: once at w for g (DeepSpeed reduces and partitions it as
for any step, nothing is stepped), then, after `perturb`, the usual forward/backward/step at w + e;
`restore` puts w back before the optimizer step. Under ZeRO-3 each rank reads its own partition of g
(the norm is all-reduced over ranks) and moves its own partition of w, so the draw-free update is the
same on 1 or N ranks; a parameter ZeRO-3 keeps whole on every rank (small ones, below the persistence
threshold) is moved in its whole copy too, from its gathered gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from distill import dist


@torch.no_grad()
def perturb(params: list[torch.nn.Parameter], radius: float) -> tuple[float, Callable[[], None]]:
    """Move the ZeRO-3 `params` by radius * g / ||g|| (g: the gradient DeepSpeed holds after backward,
    before the step). Returns ||g|| and a function that puts the weights back exactly."""
    from deepspeed.utils import safe_get_full_grad, safe_get_local_grad

    grads = [safe_get_local_grad(p) for p in params]
    square = torch.zeros((), dtype=torch.float64)
    for g in grads:
        if g is not None:
            square += g.double().pow(2).sum().cpu()
    norm = math.sqrt(float(dist.all_reduce_sum(square)))
    scale = radius / norm if norm > 0 else 0.0  # no gradient, no direction: stay
    saved = []
    for p, g in zip(params, grads):
        if g is None:
            continue
        full = safe_get_full_grad(p) if p.numel() == p.ds_numel else None  # collective: every rank calls it
        for flat, start in dist.weight_views(p):
            saved.append((flat, flat.clone()))
            whole = start == 0 and flat.numel() == p.ds_numel and full is not None
            step = (full if whole else g).reshape(-1).to(device=flat.device, dtype=torch.float32) * scale
            flat.copy_((flat.float() + step[: flat.numel()]).to(flat.dtype))

    def restore() -> None:
        with torch.no_grad():
            for flat, copy in saved:
                flat.copy_(copy)

    return norm, restore


def zero3_params(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trained parameters, each a ZeRO-3 partitioned one (SAM here needs ZeRO stage 3)."""
    params = [p for p in module.parameters() if p.requires_grad]
    if any(not hasattr(p, "ds_id") for p in params):
        raise ValueError("a sharpness-aware step needs ZeRO stage 3 partitioned parameters "
                         "(use ds_configs/zero3.json)")
    return params
