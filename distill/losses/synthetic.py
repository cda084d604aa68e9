"""Teacher targets of each kind from a teacher's logits: what tests and benchmarks feed the losses.

A real run reads its targets from the logit cache; these build the same formats from a (synthetic or
online) teacher's logits (N, V) so every implementation can be checked and timed on identical inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.losses.targets import KINDS


def teacher_target(teacher_logits: torch.Tensor, kind: str, *, k: int, temperature: float = 1.0,
                   values_dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None):
    """The target of ``kind`` that a teacher with logits (N, V) yields at temperature T.

    dense: the logits themselves; topk: (ids (N, k) int64, log-probs (N, k)) of the k most likely tokens,
    normalised over all V; sampled: k draws per row from softmax(logits / T), with replacement, each
    weighted 1/k (an unbiased estimate of the teacher's distribution; repeated ids stay repeated).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "dense":
        return teacher_logits
    log_p = torch.log_softmax(teacher_logits.double() / temperature, dim=-1)
    if kind == "topk":
        logprobs, ids = log_p.topk(k, dim=-1)
        return ids, logprobs.to(values_dtype)
    ids = torch.multinomial(log_p.exp(), k, replacement=True, generator=generator)
    return ids, torch.full(ids.shape, 1.0 / k, dtype=values_dtype, device=ids.device)


@dataclass(frozen=True)
class Case:
    """A named stress case: shapes, options and the kind of teacher and student that exercise an edge.

    teacher: "random" (logits ~ 3 N(0, 1)), "peaked" (one token 25 nats above the rest: p_tail ~ 1e-8
    for any k: tail mass near 0), "flat" (logits ~ 0.01 N(0, 1): with k = 1, p_tail ~ 1 - 1/V: tail
    mass near 1). student: "random", or "confident" (40 nats on the teacher's top k: q_tail ~ 1e-15,
    below TAIL_FLOOR, while a random teacher keeps p_tail ~ 0.5). masked: "none",
    "some" (every third row from the second) or "all"; rows not counted hold garbage (NaN teacher values,
    ids -100) that no implementation may read.
    """

    name: str
    n: int
    vocab: int
    k: int  # top-k size, or samples per row
    temperature: float = 1.0
    softcap: float | None = None
    grad_output: float = 1.0
    teacher: str = "random"
    student: str = "random"
    masked: str = "some"
    seed: int = 0

    def build(self, kind: str, dtype: torch.dtype = torch.float32):
        """(student_logits (n, V) dtype, target of ``kind``, mask (n,) bool or None)."""
        g = torch.Generator().manual_seed(self.seed)
        teacher = {"random": lambda x: 3 * x, "peaked": lambda x: x, "flat": lambda x: 0.01 * x}[self.teacher](
            torch.randn(self.n, self.vocab, generator=g, dtype=torch.float64))
        if self.teacher == "peaked":
            teacher[torch.arange(self.n), torch.randint(0, self.vocab, (self.n,), generator=g)] += 25.0
        student = 3 * torch.randn(self.n, self.vocab, generator=g, dtype=torch.float64)
        if self.student == "confident":
            top = teacher.topk(self.k, dim=-1).indices
            student.scatter_add_(1, top, torch.full(top.shape, 40.0, dtype=torch.float64))
        teacher = teacher.to(dtype)  # the teacher's logits as a bf16 teacher would hand them over
        target = teacher_target(teacher, kind, k=self.k, temperature=self.temperature, values_dtype=dtype,
                                generator=g)
        mask = {"none": None, "some": torch.arange(self.n) % 3 != 1,
                "all": torch.zeros(self.n, dtype=torch.bool)}[self.masked]
        if mask is not None:
            target = _garbage_in_ignored_rows(target, mask)
        return student.to(dtype), target, mask


def _garbage_in_ignored_rows(target, mask: torch.Tensor):
    ignored = ~mask
    if isinstance(target, torch.Tensor):
        return target.masked_fill(ignored[:, None], float("nan"))
    ids, values = target
    return ids.masked_fill(ignored[:, None], -100), values.masked_fill(ignored[:, None], float("nan"))


# The cases every implementation is checked on (tests/distill/losses, tests/distill/kernels).
CASES = (
    Case("odd_shapes", n=13, vocab=301, k=5),
    Case("single_row_softcap_t2", n=1, vocab=257, k=1, temperature=2.0, softcap=20.0, grad_output=0.37,
         masked="none"),
    Case("k64_peaked_teacher", n=6, vocab=300, k=64, temperature=0.7, softcap=5.0, grad_output=3.0,
         teacher="peaked"),
    Case("flat_teacher_tail_near_1", n=5, vocab=1000, k=1, temperature=1.5, grad_output=-2.0, teacher="flat",
         masked="none"),
    Case("confident_student_q_tail_below_floor", n=4, vocab=300, k=8, student="confident"),
    Case("all_rows_masked", n=3, vocab=300, k=4, masked="all"),
)
