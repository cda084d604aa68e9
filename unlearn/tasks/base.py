"""The task seam: what a setting supplies to every stage, so that a launch script asks the task, never its classes.

A task is built from a stage's parsed arguments (it declares its own flags per stage in `add_args`) and
gives: the tokenizer for a model; fixed-length training rows (pretraining, the logit cache, distillation);
paired forget / retain rows for unlearning; rows for the relearning attack; and evaluations. Every
evaluation returns a flat JSON-able dict that holds the task's two capability metrics, `retain_metric`
and `forget_metric`, whose direction `higher_is_capable` gives (accuracy: higher = capable;
cross-entropy: lower = capable). The distillation stop criterion and the attack's strongest attacker
follow that direction through `more_capable` and `criterion`.

A new task is one module that subclasses `Task` and adds itself to `unlearn.tasks.TASKS`.
"""

from __future__ import annotations

import abc
import argparse
from collections.abc import Callable
from typing import ClassVar

from torch.utils.data import Dataset

EvalFn = Callable[[object], dict]
STAGES = ("pretrain", "unlearn", "precompute", "distill", "relearn", "evaluate")
EVAL_KINDS = ("periodic", "criterion", "final", "attack")


class Task(abc.ABC):
    name: ClassVar[str]
    retain_metric: ClassVar[str]
    forget_metric: ClassVar[str]
    higher_is_capable: ClassVar[bool]
    metric_label: ClassVar[str]  # what the two metrics are, for reports: "accuracy", "cross-entropy (nats/token)"
    gap_help: ClassVar[str]  # what --retain-gap means for this task's retain metric

    def __init__(self, args: argparse.Namespace, stage: str):
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        self.args, self.stage = args, stage

    # -- flags -----------------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def add_args(cls, p: argparse.ArgumentParser, stage: str) -> None:
        """Add this task's flags for `stage` to the parser."""

    # -- data ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def tokenizer(self, model: str):
        """The tokenizer the stage uses with `model` (a preset name or a model directory)."""

    @abc.abstractmethod
    def training_rows(self, tokenizer, num_rows: int, seed: int) -> Dataset:
        """Fixed-length {"input_ids", "labels"} rows: at least `num_rows` where the task can make any number."""

    @abc.abstractmethod
    def rows_description(self) -> dict:
        """A JSON description of `training_rows`' settings, recorded in run configs and cache manifests."""

    def check_cache_rows(self, description: dict, cache: str, tokenizer) -> None:  # noqa: B027 (a default)
        """Refuse (UserError) a logit cache whose rows come from other data than this run's training rows.
        By default nothing is checked: the cache's own rows are what a cached run trains on."""

    @abc.abstractmethod
    def unlearning_rows(self, tokenizer, num_items: int, seed: int) -> Dataset:
        """Items {"forget": row, "retain": row}."""

    @abc.abstractmethod
    def attack_rows(self, tokenizer, num_rows: int, seed: int) -> Dataset:
        """Forget-domain {"input_ids", "labels"} rows for the relearning attack."""

    # -- evaluation ------------------------------------------------------------------------------
    @abc.abstractmethod
    def evaluation(self, tokenizer, kind: str, info) -> EvalFn:
        """A function model -> metrics dict, called on every rank together (`info`: rank, world, device)."""

    def more_capable(self, a: float, b: float) -> bool:
        """Whether metric value a shows more of the capability than b."""
        return a > b if self.higher_is_capable else a < b

    def criterion(self, teacher: dict, gap: float) -> tuple[str, Callable[[dict], bool]]:
        """The distillation stop rule: the student's retain metric within `gap` of the teacher's."""
        have = teacher[self.retain_metric]
        key = self.retain_metric
        if self.higher_is_capable:  # an absolute gap on an accuracy
            goal = have - gap
            return f"{key} >= {goal:.4f}", lambda result: result[key] >= goal
        goal = have * (1.0 + gap)  # a relative gap on a loss
        return f"{key} <= {goal:.4f}", lambda result: result[key] <= goal

    def headline(self, result: dict) -> str:
        """One line for the terminal: retain and forget metrics."""
        return (f"retain {self.retain_metric} {result[self.retain_metric]:.3f}, "
                f"forget {self.forget_metric} {result[self.forget_metric]:.3f}")
