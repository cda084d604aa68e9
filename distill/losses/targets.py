"""The teacher targets every KL loss takes, normalised and checked once, before any implementation runs.

All losses take the student's logits for N tokens over a vocabulary of V, shape (N, V), and one teacher
target, row-aligned with them, of one of three kinds:

- ``"dense"``: the teacher's logits (N, V), raw (the loss divides them by the temperature), any float dtype;
- ``"topk"``: ``(ids, logprobs)``, both (N, k): the teacher's k most likely tokens (distinct ids per row)
  and their log-probabilities *at the loss's temperature*, normalised by the full log-sum-exp over V,
  so the tail mass ``p_tail = 1 - sum(exp(logprobs))`` is exact; a padding entry has logprob -inf;
- ``"sampled"``: ``(ids, weights)``, both (N, s): sampled tokens and non-negative weights that sum to 1
  on every counted row; repeated ids add up; a padding entry has weight 0.

A dense target may also be ``ProjectedLogits``: teacher logits never held whole, each chunk's rows
computed from a frozen model's final hidden states and output matrix when the fused-linear loss reaches
them (a reference model's distribution at a 256k vocabulary).

``mask`` (N,) bool, True = counted. A row that is not counted is never read: its ids may be padding
such as -100 and its teacher values anything (NaN included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = ("dense", "topk", "sampled")

# The student's tail mass q_tail = 1 - sum_{i in S} q_i is clamped to at least this (see reference.kl_topk):
# about 1e-6, a power of two so that 1 - TAIL_FLOOR is exact in float32 and every path clamps alike.
TAIL_FLOOR = 2.0**-20

# Teacher masses are checked against 1 with this slack: enough for bf16-stored log-probs or weights
# (8-bit mantissa, k roundings), small enough to catch raw logits or unnormalised counts.
MASS_SLACK = 1e-2


@dataclass(frozen=True)
class Target:
    """A checked target. dense: ``ids`` is None and ``values`` the teacher logits (N, V);
    topk: ``values`` are log-probs (N, k); sampled: ``values`` are weights (N, s)."""

    kind: str
    ids: torch.Tensor | None
    values: torch.Tensor

    def rows(self, lo: int, hi: int) -> Target:
        """The target of rows [lo, hi) (views, no copy)."""
        return Target(self.kind, None if self.ids is None else self.ids[lo:hi], self.values[lo:hi])


@dataclass(frozen=True)
class ProjectedLogits:
    """Dense teacher logits softcap(hidden @ weight.T), rows computed on demand: hidden (N, H), weight (V, H)."""

    hidden: torch.Tensor
    weight: torch.Tensor
    softcap: float | None = None

    def rows(self, lo: int, hi: int) -> Target:
        z = self.hidden[lo:hi].float() @ self.weight.float().t()
        if self.softcap is not None:
            z = torch.tanh(z / self.softcap) * self.softcap
        return Target("dense", None, z)


def check_options(temperature: float, softcap: float | None) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if softcap is not None and not (isinstance(softcap, (int, float)) and math.isfinite(softcap) and softcap > 0):
        raise ValueError(f"softcap must be None (off) or a finite number > 0, got {softcap!r}")


def check_mask(mask: torch.Tensor | None, n: int) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool or mask.shape != (n,):
        raise ValueError(f"mask must be a bool tensor of shape ({n},) (True = counted), "
                         f"got {mask.dtype} of shape {tuple(mask.shape)}")


def make_target(kind: str, target, n: int, vocab: int, mask: torch.Tensor | None = None) -> Target | ProjectedLogits:
    """Check ``target`` of the given kind against N rows and a vocabulary of V; see the module docstring."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    check_mask(mask, n)
    if kind == "dense" and isinstance(target, ProjectedLogits):
        h, w = target.hidden, target.weight
        if h.dim() != 2 or w.dim() != 2 or h.shape[0] != n or w.shape != (vocab, h.shape[1]):
            raise ValueError(f"projected teacher logits need hidden ({n}, H) and weight ({vocab}, H), got "
                             f"{tuple(h.shape)} and {tuple(w.shape)}")
        return target
    if kind == "dense":
        if not isinstance(target, torch.Tensor):
            raise ValueError(f"a dense target is the teacher's logits tensor (N, V), got {type(target).__name__}")
        if target.shape != (n, vocab) or not target.is_floating_point():
            raise ValueError(f"dense target (teacher logits) must be a float tensor of shape ({n}, {vocab}), "
                             f"got {target.dtype} of shape {tuple(target.shape)}")
        return Target(kind, None, target)
    name = "logprobs" if kind == "topk" else "weights"
    if not (isinstance(target, (tuple, list)) and len(target) == 2):
        raise ValueError(f"a {kind} target is a pair (ids (N, k), {name} (N, k)), got {type(target).__name__}")
    ids, values = target
    if ids.dim() != 2 or ids.shape[0] != n or ids.shape[1] < 1 or ids.is_floating_point() or ids.is_complex():
        raise ValueError(f"{kind} ids must be an integer tensor of shape ({n}, k) with k >= 1, "
                         f"got {ids.dtype} of shape {tuple(ids.shape)}")
    if values.shape != ids.shape or not values.is_floating_point():
        raise ValueError(f"{kind} {name} must be a float tensor of the ids' shape {tuple(ids.shape)}, "
                         f"got {values.dtype} of shape {tuple(values.shape)}")
    if kind == "topk" and ids.shape[1] > vocab:
        raise ValueError(f"topk k = {ids.shape[1]} exceeds the vocabulary size {vocab}")
    out = Target(kind, ids, values)
    _check_values(out, vocab, mask)
    return out


def _check_values(t: Target, vocab: int, mask: torch.Tensor | None) -> None:
    """Data checks over the counted rows, with one host sync: ids in range, distinct top-k ids, masses."""
    ids, values = t.ids, t.values.float()
    if mask is not None:
        ids, values = ids[mask], values[mask]
    if ids.numel() == 0:
        return
    problems = [((ids < 0) | (ids >= vocab)).any()]
    if t.kind == "topk":
        sorted_ids = ids.sort(dim=1).values
        problems.append((sorted_ids[:, 1:] == sorted_ids[:, :-1]).any())
        problems.append((values.exp().sum(1) > 1 + MASS_SLACK).any() | values.isnan().any())
    else:
        problems.append(~(values >= 0).all())  # NaN fails too
        problems.append(((values.sum(1) - 1).abs() > MASS_SLACK).any())
    bad = torch.stack(problems).tolist()
    if bad[0]:
        raise ValueError(f"{t.kind} ids of a counted row lie outside [0, {vocab}): "
                         f"min {int(ids.min())}, max {int(ids.max())}")
    if t.kind == "topk" and bad[1]:
        raise ValueError("topk ids must be distinct within a row (the teacher's k most likely tokens)")
    if t.kind == "topk" and bad[2]:
        raise ValueError("topk logprobs must be the teacher's log-probabilities (each row's exp-sum <= 1, no NaN), "
                         f"found a row with exp-sum {float(values.exp().sum(1).max()):.4f}: raw logits?")
    if t.kind == "sampled" and bad[1]:
        raise ValueError("sampled weights must be >= 0 (no NaN)")
    if t.kind == "sampled" and bad[2]:
        sums = values.sum(1)
        raise ValueError(f"sampled weights must sum to 1 on every counted row, found sums in "
                         f"[{float(sums.min()):.4f}, {float(sums.max()):.4f}]")


def count(mask: torch.Tensor | None, n: int, device) -> torch.Tensor:
    """Number of counted rows, an int64 scalar tensor on ``device`` (no host sync)."""
    if mask is None:
        return torch.tensor(n, dtype=torch.int64, device=device)
    return mask.sum(dtype=torch.int64)
