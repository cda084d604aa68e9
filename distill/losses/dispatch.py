"""The one place that picks an implementation: Triton on CUDA, the chunked PyTorch path elsewhere.

Both backends compute the same per-row losses and write the same gradient in place (see
``distill.losses.chunked`` and ``distill.kernels``); ``backend`` forces one ("triton" on CPU tensors
runs only under TRITON_INTERPRET=1, which is how the tests check the kernels).
"""

from __future__ import annotations

import functools

import torch

from distill.losses.chunked import kl_chunked
from distill.losses.chunked import loss_and_grad_ as torch_loss_and_grad_
from distill.losses.targets import Target

BACKENDS = ("auto", "triton", "torch")


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """"triton" or "torch" for tensors on ``device``; None and "auto" mean Triton exactly on CUDA."""
    backend = backend or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    return backend


def loss_and_grad_(z: torch.Tensor, target: Target, mask: torch.Tensor | None, *, temperature: float,
                   softcap: float | None, compute_grad: bool, backend: str) -> torch.Tensor:
    """Per-row loss (C,) float32 of float32 logits z (C, V); with compute_grad z holds d loss / dz after.
    ``backend`` is a resolved one ("triton" or "torch")."""
    opts = dict(temperature=temperature, softcap=softcap, compute_grad=compute_grad)
    if backend == "triton":
        from distill.kernels import kl_forward_  # imported on use: Triton must not load on machines without it
        return kl_forward_(z, target, mask, **opts)
    return torch_loss_and_grad_(z, target, mask, **opts)


def kl_loss(student_logits: torch.Tensor, target, *, kind: str, temperature: float = 1.0,
            softcap: float | None = None, mask: torch.Tensor | None = None, inplace: bool = True,
            chunk_size: int | None = None, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss_sum, n_tokens): the KL loss of logits that already exist, student_logits (N, V).

    target: teacher logits (N, V) for kind="dense", (ids (N, k), logprobs (N, k)) for "topk",
    (ids (N, s), weights (N, s)) for "sampled"; mask (N,) bool, True = counted. With ``inplace`` the
    gradient is written over ``student_logits`` during the forward (see ``kl_chunked``/``kl_triton``).
    ``chunk_size`` (rows) applies to the PyTorch path, which runs chunk by chunk.
    Prefer ``fused_linear_kl`` where the hidden states and the output matrix are at hand: it never
    holds the (N, V) logits.
    """
    opts = dict(kind=kind, temperature=temperature, softcap=softcap, mask=mask, inplace=inplace)
    if resolve_backend(backend, student_logits.device) == "triton":
        from distill.kernels import kl_triton
        return kl_triton(student_logits, target, **opts)
    return kl_chunked(student_logits, target, chunk_size=chunk_size, **opts)
