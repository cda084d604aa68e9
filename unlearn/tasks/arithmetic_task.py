"""The arithmetic setting as a task: + and - retained, * and / forgotten, scored by exact-match accuracy.

Its flags and defaults per stage are those the launch scripts had before the task seam, so every
documented arithmetic command runs unchanged. The character tokenizer is the task's own.
"""

from __future__ import annotations

from distill.errors import UserError
from distill.knobs import at_least, at_least_one, checked, unit_interval
from unlearn.tasks.arithmetic import (
    FORGET_OPS,
    FORMATS,
    OPS,
    RETAIN_OPS,
    PackedArithmeticDataset,
    eval_problems,
    parse_ops,
)
from unlearn.tasks.base import Task
from unlearn.tasks.forget_retain import ForgetRetainDataset
from unlearn.tasks.problem_rows import ProblemRows
from unlearn.tasks.tokenizer import build_char_tokenizer

PERIODIC_EVAL_SEED = 7  # a small fixed set for progress and the stop criterion; the final set is the default seed
# Share of word problems in each stage's rows (the demo base model learns equations first).
WORD_FRACTION = {"pretrain": 0.05, "precompute": 0.05, "distill": 0.05, "unlearn": 0.0, "relearn": 0.0}
# Problems per operation and format in periodic (or criterion) evaluations.
EVAL_PER_FORMAT = {"pretrain": 20, "unlearn": 20, "distill": 100}


class ArithmeticTask(Task):
    name = "arithmetic"
    retain_metric = "retain_accuracy"
    forget_metric = "forget_accuracy"
    higher_is_capable = True
    metric_label = "accuracy"
    gap_help = "an absolute gap in retain accuracy"

    @classmethod
    def add_args(cls, p, stage):
        g = p.add_argument_group("arithmetic task")
        if stage in ("pretrain", "precompute", "distill"):
            g.add_argument("--seq-len", type=checked(int, at_least(2)), default=64,
                           help="tokens per packed training row")
        if stage == "pretrain":
            g.add_argument("--ops", default=None, help="operations to train on, e.g. '+,-,*,/' (default: all four)")
            g.add_argument("--filter-forget", action="store_true",
                           help="leave the forget operations (* and /) out of the data: the data-filtered gold "
                                "standard")
        if stage == "unlearn":
            g.add_argument("--forget-ops", default="*,/", help="operations to forget")
            g.add_argument("--retain-ops", default="+,-", help="operations to keep")
        if stage == "relearn":
            g.add_argument("--ops", default=",".join(FORGET_OPS), help="the forget operations attacked and evaluated")
            g.add_argument("--formats", default="equation", help=f"evaluation formats, from {', '.join(FORMATS)}")
            g.add_argument("--eval-per-op", type=checked(int, at_least_one), default=100,
                           help="held-out problems per operation per evaluation")
        if stage == "evaluate":
            g.add_argument("--ops", default=None, help="operations to score, e.g. '*,/' (default: all four)")
            g.add_argument("--per-format", type=checked(int, at_least_one), default=100,
                           help="problems per operation and format")
            g.add_argument("--batch-size", type=checked(int, at_least_one), default=200,
                           help="problems decoded together")
        if stage in WORD_FRACTION:
            g.add_argument("--word-fraction", type=checked(float, unit_interval), default=WORD_FRACTION[stage],
                           help="share of word problems among the examples")
        if stage in EVAL_PER_FORMAT:
            g.add_argument("--eval-per-format", type=checked(int, at_least_one), default=EVAL_PER_FORMAT[stage],
                           help="problems per op and format in periodic (criterion) evaluations")
        if stage in ("pretrain", "unlearn", "distill"):
            g.add_argument("--final-eval-per-format", type=checked(int, at_least_one), default=100,
                           help="held-out problems per operation and format in the final evaluation")

    def __init__(self, args, stage):
        super().__init__(args, stage)
        try:
            self.train_ops = self._train_ops() if stage == "pretrain" else OPS
            self.eval_ops = parse_ops(args.ops) if stage in ("relearn", "evaluate") and args.ops else (
                FORGET_OPS if stage == "relearn" else OPS)
        except ValueError as e:
            raise UserError(f"--ops: {e}") from e
        if stage == "relearn":
            self.formats = tuple(f for f in args.formats.split(",") if f)
            if not self.formats or any(f not in FORMATS for f in self.formats):
                raise UserError(f"--formats {args.formats}: expected some of {', '.join(FORMATS)}")

    def _train_ops(self) -> tuple[str, ...]:
        ops = parse_ops(self.args.ops) if self.args.ops else OPS
        if self.args.filter_forget:
            if self.args.ops and set(ops) & set(FORGET_OPS):
                raise UserError(f"--filter-forget contradicts --ops {self.args.ops}: it removes {' '.join(FORGET_OPS)}")
            ops = tuple(op for op in ops if op in RETAIN_OPS)
        return ops

    def tokenizer(self, model):
        return build_char_tokenizer()

    def training_rows(self, tokenizer, num_rows, seed):
        try:
            return PackedArithmeticDataset(tokenizer, self.train_ops, self.args.seq_len, num_rows=num_rows, seed=seed,
                                           word_fraction=self.args.word_fraction)
        except ValueError as e:
            raise UserError(f"dataset options: {e}") from e

    def rows_description(self):
        return {"kind": "arithmetic-packed", "ops": list(self.train_ops), "seq_len": self.args.seq_len,
                "word_fraction": self.args.word_fraction}

    def unlearning_rows(self, tokenizer, num_items, seed):
        try:
            return ForgetRetainDataset(tokenizer, self.args.forget_ops, self.args.retain_ops, num_items, seed=seed,
                                       word_fraction=self.args.word_fraction)
        except ValueError as e:
            raise UserError(str(e)) from e

    def unlearning_description(self, rows) -> dict:
        return {"forget_ops": list(rows.forget_ops), "retain_ops": list(rows.retain_ops),
                "word_fraction": self.args.word_fraction}

    def attack_rows(self, tokenizer, num_rows, seed):
        return ProblemRows(tokenizer, self.eval_ops, num_rows, seed=seed, word_fraction=self.args.word_fraction)

    def attack_description(self) -> dict:
        return {"ops": list(self.eval_ops), "formats": list(self.formats), "eval_per_op": self.args.eval_per_op,
                "word_fraction": self.args.word_fraction}

    def _problems(self, kind):
        a = self.args
        if kind == "periodic":
            return eval_problems(OPS, a.eval_per_format, seed=PERIODIC_EVAL_SEED)
        if kind == "criterion":  # retain ops at full size (the stop rests on them); forget ops only watched
            return (eval_problems(RETAIN_OPS, a.eval_per_format, seed=PERIODIC_EVAL_SEED)
                    + eval_problems(FORGET_OPS, min(a.eval_per_format, 20), seed=PERIODIC_EVAL_SEED))
        if kind == "attack":
            n = -(-a.eval_per_op // len(self.formats))  # per op and format, so each op gets eval_per_op
            return [p for p in eval_problems(self.eval_ops, n) if p.format in self.formats]
        per_format = a.per_format if self.stage == "evaluate" else a.final_eval_per_format
        return eval_problems(self.eval_ops, per_format)  # the fixed held-out set

    def evaluation(self, tokenizer, kind, info):
        from unlearn.evaluate import score

        problems = self._problems(kind)
        batch_size = self.args.batch_size if self.stage == "evaluate" else 128
        return lambda model: score(model, tokenizer, problems, batch_size=batch_size, rank=info.rank,
                                   world=info.world_size, device=info.device)
