"""Which numbers measure the capability in a results dict, and which way is "more capable".

The arithmetic setting scores accuracy (higher = more capable); the language setting scores
cross-entropy in nats per token (lower = more capable). A results dict names its capability in
results["setting"]["capability"] (a results dict without one is an accuracy run, as every run before the
language setting was). The report, the figures and the comparisons compare values through `score`, which
turns either into "larger = more capable", and print the raw values with `label`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Capability:
    retain: str  # the key of the retain metric in a model's evaluation and results entry
    forget: str  # the forget metric's key; also the key of a relearning curve
    higher_is_capable: bool
    label: str  # "accuracy", "cross-entropy (nats/token)"

    def score(self, value: float) -> float:
        """The value turned so that larger means more capable (the forget domain known, the retain one kept)."""
        return value if self.higher_is_capable else -value

    @property
    def bounded(self) -> bool:
        """Accuracies (and their relearning areas) lie in [0, 1]; cross-entropies have no fixed top."""
        return self.higher_is_capable

    def to_json(self) -> dict:
        return asdict(self)


def of_task(task) -> Capability:
    """The capability a task (class or instance) declares."""
    return Capability(task.retain_metric, task.forget_metric, task.higher_is_capable, task.metric_label)


ACCURACY = Capability("retain_accuracy", "forget_accuracy", True, "accuracy")  # what runs before the language
# setting recorded implicitly; the arithmetic task declares the same


def capability_of(results: Mapping) -> Capability:
    """The capability a results dict records (accuracy when it records none)."""
    found = (results.get("setting") or {}).get("capability")
    return Capability(**found) if found else ACCURACY

