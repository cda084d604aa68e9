"""Distillation losses: forward KL(teacher || student) against dense, top-k (+ tail) and sampled targets.

Layout, one concern per module:

- ``targets``: the three target kinds, checked once (shapes, ids, masses) before any implementation;
- ``reference``: the math in plain PyTorch, the source of truth that tests and benchmarks import;
- ``chunked``: the same loss with its analytic gradient, in place, chunk by chunk (the CPU path);
- ``distill.kernels``: the Triton kernels for CUDA (the same contract as ``chunked.loss_and_grad_``);
- ``dispatch``: picks Triton on CUDA and the chunked path elsewhere; ``kl_loss`` for existing logits;
- ``fused_linear``: the loss from hidden states and the output matrix, never holding (N, V), and the
  ``FusedLinearKL`` module for ZeRO-3.

Every function returns (loss_sum, n_tokens): the sum of per-token losses over counted rows (times T^2)
and the number of counted rows, for the caller to normalise across accumulation steps and ranks.
"""

from distill.losses.dispatch import kl_loss
from distill.losses.fused_linear import FusedLinearKL, fused_linear_kl
from distill.losses.reference import kl_dense, kl_sampled, kl_topk, reference_kl
from distill.losses.targets import KINDS, TAIL_FLOOR

__all__ = ["KINDS", "TAIL_FLOOR", "FusedLinearKL", "fused_linear_kl", "kl_dense", "kl_loss", "kl_sampled",
           "kl_topk", "reference_kl"]
