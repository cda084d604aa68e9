"""Learning-rate schedule as a pure function of the step, so a resumed run needs no scheduler state."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "constant", "linear")


def lr_at(step: int, total_steps: int, peak_lr: float, warmup_steps: int, min_lr: float,
          schedule: str = "cosine") -> float:
    """LR for optimizer step `step` (0-based): linear warm-up to peak_lr, then decay to min_lr."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown LR schedule {schedule!r}: expected one of {', '.join(SCHEDULES)}")
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak_lr
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    if schedule == "linear":
        return peak_lr + (min_lr - peak_lr) * progress
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
