"""Triton kernels for the distillation KL losses (dense, top-k with tail bucket, weighted sampled).

Layers, thinnest first: kernels and their host launch functions (``kl_dense``, ``kl_topk``,
``kl_sampled``), the kind dispatch ``kl_forward_``, the autograd Function ``TritonKLFunction`` and the
functional ``kl_triton``. Import this package only where Triton runs: on a CUDA device, or on CPU
tensors with TRITON_INTERPRET=1 set before the first import of triton (the tests).
"""

from distill.kernels.kl import TritonKLFunction, kl_forward_, kl_triton

__all__ = ["TritonKLFunction", "kl_forward_", "kl_triton"]
