"""The KL loss from hidden states and the output matrix, chunked over tokens: (N, V) is never held.

For each chunk of C rows: logits = hidden[chunk] @ weight.T in float32 (C, V); the loss and its
gradient with respect to those logits, in place (``dispatch.loss_and_grad_``: Triton on CUDA, PyTorch
elsewhere); then grad_hidden[chunk] = g @ weight and grad_weight += g.T @ hidden[chunk], both in
float32. The forward thus finishes the gradients (the fused-linear trick of Liger-Kernel); the backward
only scales them by grad_output. Peak memory beyond the inputs and their float32 gradients is a few
(C, V) buffers (one float32 buffer for top-k and sampled targets on CPU without softcap; on CUDA with
bf16 weights also its bf16 copy as a GEMM operand), whatever N is.

Precision: the logits GEMM accumulates and outputs float32. On CUDA with bf16/fp16 weights the GEMMs
take low-precision operands (the chunk's gradient is rounded to the weight's dtype as an operand, as
every fused-linear loss does) and accumulate in float32 into float32 outputs; grad_weight accumulates
over chunks in float32. On CPU, low-precision inputs are upcast to float32 (CPU ranks train in float32).

Under ZeRO-3 the weight is a partition until gathered: call the loss through ``FusedLinearKL``, a module
that holds the (tied) weight, so DeepSpeed gathers it for this forward and again for the backward, and
the gradient returned here reaches ZeRO's partitions.
"""

from __future__ import annotations

import functools

import torch

from distill.losses.chunked import default_chunk_rows
from distill.losses.dispatch import loss_and_grad_, resolve_backend
from distill.losses.targets import KINDS, Target, check_options, count, make_target


@functools.cache
def _fp32_out_gemm_supported() -> bool:
    """torch.mm(bf16, bf16, out_dtype=float32) on CUDA (torch >= 2.8); older versions upcast instead."""
    try:
        a = torch.zeros(16, 16, dtype=torch.bfloat16, device="cuda")
        torch.mm(a, a, out_dtype=torch.float32)
        return True
    except (TypeError, RuntimeError):
        return False


def _low_precision_gemms(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """True: run the GEMMs on the low-precision operands with float32 outputs; False: in float32."""
    low = weight.dtype != torch.float32 or hidden.dtype != torch.float32
    return low and hidden.dtype == weight.dtype and weight.is_cuda and _fp32_out_gemm_supported()


def _mm(a, b, out, low: bool):
    return torch.mm(a, b, out_dtype=torch.float32, out=out) if low else torch.mm(a, b, out=out)


def _addmm_(acc, a, b, low: bool):
    return torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc) if low else acc.addmm_(a, b)


def _chunks(hidden, weight, target, mask, scale, temperature, softcap, chunk_rows, backend, need_grad_hidden,
            need_grad_weight):
    """(per-row losses (N,), grad_hidden or None, grad_weight or None), a chunk of rows at a time. With
    `scale` (N,) row r's loss and gradient are multiplied by scale[r] (any sign)."""
    n, size = hidden.shape
    vocab = weight.shape[0]
    low = _low_precision_gemms(hidden, weight)
    w = weight.detach() if low else weight.detach().float()  # no copy when already float32
    compute_grad = need_grad_hidden or need_grad_weight
    dev = hidden.device
    grad_hidden = torch.empty(n, size, dtype=torch.float32, device=dev) if need_grad_hidden else None
    grad_weight = torch.zeros(vocab, size, dtype=torch.float32, device=dev) if need_grad_weight else None
    buf = torch.empty(min(chunk_rows, n), vocab, dtype=torch.float32, device=dev)  # reused by every chunk
    loss_rows = torch.empty(n, dtype=torch.float32, device=dev)
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        h = hidden.detach()[lo:hi]
        h = h if low else h.float()
        z = _mm(h, w.t(), buf[: hi - lo], low)
        loss_rows[lo:hi] = loss_and_grad_(z, target.rows(lo, hi), None if mask is None else mask[lo:hi],
                                          temperature=temperature, softcap=softcap,
                                          compute_grad=compute_grad, backend=backend)
        if scale is not None:
            loss_rows[lo:hi] *= scale[lo:hi]
        if compute_grad:
            if scale is not None:
                z.mul_(scale[lo:hi, None])
            g = z.to(w.dtype)  # the GEMM operand: z itself in float32, a rounded copy for bf16 weights
            if need_grad_hidden:
                _mm(g, w, grad_hidden[lo:hi], low)
            if need_grad_weight:
                _addmm_(grad_weight, g.t(), h, low)
    return loss_rows, grad_hidden, grad_weight


class FusedLinearKLFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, target: Target, mask, scale, temperature, softcap, chunk_rows, backend,
                need_grad_hidden, need_grad_weight):
        loss_rows, grad_hidden, grad_weight = _chunks(hidden, weight, target, mask, scale, temperature, softcap,
                                                      chunk_rows, backend, need_grad_hidden, need_grad_weight)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.used = False
        return loss_rows.sum()

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.used:
            raise RuntimeError("backward through a fused-linear KL loss can run once: its gradients are "
                               "scaled in place (do not use retain_graph=True through it)")
        ctx.used = True
        grad_hidden, grad_weight = ctx.saved_tensors
        go = grad_output.float()
        grads = [None if g is None else g.mul_(go).to(dtype) for g, dtype in zip((grad_hidden, grad_weight),
                                                                                 ctx.dtypes)]
        return grads[0], grads[1], None, None, None, None, None, None, None, None, None


def fused_linear_kl(hidden: torch.Tensor, weight: torch.Tensor, target, *, kind: str, temperature: float = 1.0,
                    softcap: float | None = None, mask: torch.Tensor | None = None, chunk_size: int | None = None,
                    backend: str | None = None, scale: torch.Tensor | None = None,
                    reduction: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """(loss_sum, n_tokens) of the student's logits hidden @ weight.T against ``target``, never held whole.

    hidden (N, H) the student's final hidden states (after its final norm), weight (V, H) its output
    matrix; target as in ``distill.losses.targets`` (dense: teacher logits (N, V); topk: (ids, logprobs);
    sampled: (ids, weights)); mask (N,) bool, True = counted. softcap caps the student's logits
    (Gemma-2: 30.0). chunk_size: rows per chunk (default: about 128 MiB of float32 logits). backend:
    None/"auto" (Triton on CUDA, PyTorch elsewhere), "triton" or "torch". Value and gradients are the
    reference's on the materialised logits. The backward can run once.

    scale (N,) float, optional: weights row r's loss (and gradient) by scale[r], of any sign (a weighted
    cross-entropy, gradient ascent, a per-sequence coefficient). reduction "none" returns the per-row
    losses (N,) instead of their sum, without gradients (for log-probs that steer a later term).
    """
    if reduction not in ("sum", "none"):
        raise ValueError(f"reduction must be 'sum' or 'none', got {reduction!r}")
    check_options(temperature, softcap)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if weight.dim() != 2 or weight.numel() == 0:
        raise ValueError(f"weight must be the output matrix (V, H), got shape {tuple(weight.shape)}: a ZeRO-3 "
                         "partition? Call the loss through FusedLinearKL, which DeepSpeed gathers the weight for")
    if hidden.dim() != 2 or hidden.shape[1] != weight.shape[1] or not hidden.is_floating_point():
        raise ValueError(f"hidden must be a float tensor (N, H) with H = {weight.shape[1]} (the weight's "
                         f"second dimension), got {hidden.dtype} of shape {tuple(hidden.shape)}")
    if hidden.device != weight.device:
        raise ValueError(f"hidden is on {hidden.device} but the weight on {weight.device}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    n, vocab = hidden.shape[0], weight.shape[0]
    t = make_target(kind, target, n, vocab, mask)
    if scale is not None and (scale.shape != (n,) or not scale.is_floating_point()):
        raise ValueError(f"scale must be a float tensor of shape ({n},), got {scale.dtype} of {tuple(scale.shape)}")
    scale = None if scale is None else scale.detach().float()
    grad_on = torch.is_grad_enabled()
    rows = chunk_size or default_chunk_rows(vocab)
    backend = resolve_backend(backend, hidden.device)
    if reduction == "none":
        if grad_on and (hidden.requires_grad or weight.requires_grad):
            raise ValueError("reduction='none' gives per-row losses without gradients: call it under torch.no_grad()")
        loss_rows, _, _ = _chunks(hidden, weight, t, mask, scale, float(temperature), softcap, rows, backend,
                                  False, False)
        return loss_rows, count(mask, n, hidden.device)
    loss = FusedLinearKLFunction.apply(hidden, weight, t, mask, scale, float(temperature), softcap, rows, backend,
                                       grad_on and hidden.requires_grad, grad_on and weight.requires_grad)
    return loss, count(mask, n, hidden.device)


class FusedLinearKL(torch.nn.Module):
    """The distillation loss as a module that holds the student's output matrix (V, H).

    Under ZeRO-3, DeepSpeed gathers a module's parameters for its forward and again for its backward;
    owning the (tied) weight makes this module's call see the whole matrix and send its gradient to
    ZeRO's partitions. Give it the output embedding's Parameter itself (shared, not copied) and register
    it beside the model before ``deepspeed.initialize``, e.g. in a wrapper module holding both (keeping
    it out of the Hugging Face model keeps a second name for the tied weight out of its exports):

        head = FusedLinearKL(model.get_output_embeddings().weight, kind="topk", softcap=30.0)
        loss_sum, n = head(hidden.flatten(0, 1), (ids.flatten(0, 1), logprobs.flatten(0, 1)), mask)

    forward(hidden (N, H), target, mask (N,) bool or None) -> (loss_sum, n_tokens); see ``fused_linear_kl``.
    """

    def __init__(self, weight: torch.nn.Parameter, *, kind: str, temperature: float = 1.0,
                 softcap: float | None = None, chunk_size: int | None = None, backend: str | None = None,
                 vocab: int | None = None):
        super().__init__()
        check_options(temperature, softcap)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.weight = weight
        self.kind, self.temperature, self.softcap = kind, float(temperature), softcap
        self.chunk_size, self.backend = chunk_size, backend
        self.vocab = vocab  # use only the first `vocab` rows: the tokenizer's ids, the rest is padding

    def forward(self, hidden: torch.Tensor, target, mask: torch.Tensor | None = None, *, kind: str | None = None,
                scale: torch.Tensor | None = None, reduction: str = "sum"):
        """kind overrides the head's own for this call (one head, one gathered matrix, several losses)."""
        weight = self.weight if self.vocab is None else self.weight[: self.vocab]
        return fused_linear_kl(hidden, weight, target, kind=kind or self.kind, temperature=self.temperature,
                               softcap=self.softcap, mask=mask, chunk_size=self.chunk_size, backend=self.backend,
                               scale=scale, reduction=reduction)

    def extra_repr(self) -> str:
        vocab = getattr(self.weight, "ds_shape", self.weight.shape)[0]  # a ZeRO-3 partition keeps its shape there
        return (f"vocab={vocab}, kind={self.kind!r}, temperature={self.temperature}, "
                f"softcap={self.softcap}, chunk_size={self.chunk_size}, used_rows={self.vocab}")
