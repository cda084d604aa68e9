"""The text task: your own model and corpora. Forget and retain are text; capability is cross-entropy.

Corpora are read by `unlearn.tasks.text_corpus` (json/jsonl, parquet, csv, text files or globs, or a
`save_to_disk` directory). The tokenizer is the model directory's own (`AutoTokenizer`; a preset model
needs --tokenizer DIR); one without a pad token pads with its eos token.

- training rows (pretraining, the logit cache, distillation): --data packed into rows of --seq-len;
- unlearning: documents of --forget-data and --retain-data, each truncated to --seq-len (not packed,
  so per-sequence methods see sequences), paired in a seeded order;
- the relearning attack: --forget-data packed into rows (its training part);
- evaluations: per-token cross-entropy (nats) and top-1 next-token accuracy on held-out forget and
  retain documents: --forget-eval / --retain-eval, or by default a seeded split (--eval-fraction,
  --split-seed, the same in every stage) of --forget-data / --retain-data that training never reads;
  with --mcq-eval FILE the final evaluation adds multiple-choice accuracy (`unlearn.tasks.mcq`).

Capability is the forget cross-entropy: lower = more capable. The distillation stop rule is the paper's,
retain cross-entropy within --retain-gap (relative, default 5%) of the teacher's.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from distill.errors import UserError
from distill.knobs import at_least, at_least_one, checked, non_negative, open_unit_interval
from unlearn.tasks.base import Task
from unlearn.tasks.mcq import load_questions, mcq_accuracy
from unlearn.tasks.text_corpus import DocumentRows, PackedRows, load_corpus, split_corpus, tokenize
from unlearn.tasks.text_eval import cross_entropy_and_accuracy

NEEDS = {  # the corpus flags each stage requires
    "pretrain": ("data", "forget", "retain"), "precompute": ("data",), "distill": ("data", "forget", "retain"),
    "unlearn": ("forget", "retain"), "relearn": ("forget",), "evaluate": ("forget", "retain"),
}


class PairedDocuments(Dataset):
    """Items {"forget": doc, "retain": doc}: item i pairs seeded permutations of both, cycled."""

    def __init__(self, forget: DocumentRows, retain: DocumentRows, num_items: int, seed: int):
        self.forget, self.retain, self.num_items = forget, retain, num_items
        rng = np.random.default_rng(seed)
        self.f_order, self.r_order = rng.permutation(len(forget)), rng.permutation(len(retain))

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.num_items:
            raise IndexError(f"item index {i} out of range [0, {self.num_items})")
        return {"forget": self.forget[int(self.f_order[i % len(self.forget)])],
                "retain": self.retain[int(self.r_order[i % len(self.retain)])]}


class TextTask(Task):
    name = "text"
    retain_metric = "retain_ce"
    forget_metric = "forget_ce"
    higher_is_capable = False
    metric_label = "cross-entropy (nats/token)"
    gap_help = "a relative gap in retain cross-entropy (0.05: within 5%% of the teacher's)"

    @classmethod
    def add_args(cls, p, stage):
        g = p.add_argument_group("text task")
        needs = NEEDS[stage]
        g.add_argument("--tokenizer", default=None,
                       help="tokenizer directory (default: the model's own; required for a preset model)")
        g.add_argument("--text-field", default="text", help="the field holding the text in json/parquet/csv corpora")
        g.add_argument("--seq-len", type=checked(int, at_least(2)), default=256,
                       help="tokens per row (rows are packed, documents truncated)")
        g.add_argument("--map-procs", type=checked(int, at_least_one), default=None,
                       help="processes for tokenising (datasets' num_proc)")
        if "data" in needs:
            g.add_argument("--data", required=True, help="the pretraining / distillation corpus")
        if "forget" in needs:
            g.add_argument("--forget-data", required=stage in ("unlearn", "relearn"), default=None,
                           help="forget-domain text")
            g.add_argument("--forget-eval", default=None,
                           help="held-out forget text (default: a split of --forget-data)")
        if "retain" in needs:
            g.add_argument("--retain-data", required=stage == "unlearn", default=None, help="retain-domain text")
            g.add_argument("--retain-eval", default=None,
                           help="held-out retain text (default: a split of --retain-data)")
        if "forget" in needs or "retain" in needs:
            g.add_argument("--eval-fraction", type=checked(float, open_unit_interval), default=0.1,
                           help="share of --forget-data / --retain-data documents held out when no --*-eval is given")
            g.add_argument("--split-seed", type=checked(int, non_negative), default=0,
                           help="seed of that split (keep it equal across stages)")
            g.add_argument("--eval-docs", type=checked(int, at_least_one), default=64,
                           help="held-out documents scored per side")
            g.add_argument("--eval-batch", type=checked(int, at_least_one), default=8,
                           help="documents per forward pass in evaluations")
            g.add_argument("--mcq-eval", default=None,
                           help="multiple-choice questions (json/jsonl: question, choices, answer) scored in the "
                                "final evaluation as lm-evaluation-harness's acc (unlearn/tasks/mcq.py)")

    def __init__(self, args, stage):
        super().__init__(args, stage)
        for side in ("forget", "retain"):
            if side in NEEDS[stage] and getattr(args, f"{side}_data") is None and getattr(args, f"{side}_eval") is None:
                raise UserError(f"--task text needs --{side}-data or --{side}-eval for its evaluations")
        if "forget" in NEEDS[stage] or "retain" in NEEDS[stage]:
            if not 0.0 < args.eval_fraction < 1.0:
                raise UserError(f"--eval-fraction must lie in (0, 1), got {args.eval_fraction}")
            if args.eval_docs < 1 or args.eval_batch < 1:
                raise UserError("--eval-docs and --eval-batch must be >= 1")
        if args.seq_len < 2:
            raise UserError(f"--seq-len must be >= 2, got {args.seq_len}")
        self.questions = load_questions(args.mcq_eval) if getattr(args, "mcq_eval", None) else None
        self._held_out_rows: dict[str, DocumentRows] = {}

    # -- tokenizer -------------------------------------------------------------------------------
    def tokenizer(self, model):
        from transformers import AutoTokenizer

        source = self.args.tokenizer or model
        if not Path(source).is_dir():
            raise UserError(f"--task text takes the tokenizer from the model directory; {model} is not one: "
                            "pass --tokenizer DIR")
        try:
            tok = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise UserError(f"no tokenizer could be loaded from {source}: {e}") from e
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise UserError(f"the tokenizer of {source} has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token  # pads are masked out of every loss
        return tok

    # -- corpora ---------------------------------------------------------------------------------
    def _corpus(self, flag: str):
        spec = getattr(self.args, flag.lstrip("-").replace("-", "_"))
        return load_corpus(spec, self.args.text_field, flag)

    def _sides(self, side: str):
        """(training documents or None, held-out documents) of the forget or retain side."""
        a = self.args
        data, held = getattr(a, f"{side}_data"), getattr(a, f"{side}_eval")
        if held is not None:
            return (self._corpus(f"--{side}-data") if data is not None else None), self._corpus(f"--{side}-eval")
        return split_corpus(self._corpus(f"--{side}-data"), a.eval_fraction, a.split_seed)

    @cached_property
    def _forget(self):
        return self._sides("forget")

    @cached_property
    def _retain(self):
        return self._sides("retain")

    def _tokenised(self, ds, tokenizer, what):
        return tokenize(ds, tokenizer, num_proc=self.args.map_procs, what=what)

    def training_rows(self, tokenizer, num_rows, seed):
        self._rows = PackedRows(self._tokenised(self._corpus("--data"), tokenizer, "--data"), self.args.seq_len,
                                what=f"--data {self.args.data}")
        return self._rows

    def rows_description(self):
        rows = getattr(self, "_rows", None)
        return {"kind": "text-packed", "data": str(self.args.data), "seq_len": self.args.seq_len,
                "corpus": None if rows is None else rows.fingerprint}

    def check_cache_rows(self, description, cache, tokenizer):
        rows = self.training_rows(tokenizer, 0, seed=0)
        theirs = (description.get("kind"), description.get("corpus"), description.get("seq_len"))
        if theirs != ("text-packed", rows.fingerprint, self.args.seq_len):
            raise UserError(f"--cache {cache} was computed on other rows ({description.get('kind')} of "
                            f"{description.get('data')!r}, seq_len {description.get('seq_len')}) than --data "
                            f"{self.args.data} packed into rows of {self.args.seq_len} tokens: corpus mismatch")

    def unlearning_rows(self, tokenizer, num_items, seed):
        forget, retain = self._forget[0], self._retain[0]
        if forget is None or retain is None:
            raise UserError("unlearning trains on --forget-data and --retain-data")
        docs = [DocumentRows(self._tokenised(ds, tokenizer, what), self.args.seq_len)
                for ds, what in ((forget, "--forget-data"), (retain, "--retain-data"))]
        return PairedDocuments(*docs, num_items=num_items, seed=seed)

    def unlearning_description(self, rows) -> dict:
        return {"forget_data": self.args.forget_data, "retain_data": self.args.retain_data,
                "seq_len": self.args.seq_len, "forget_docs": len(rows.forget), "retain_docs": len(rows.retain)}

    def attack_rows(self, tokenizer, num_rows, seed):
        forget = self._forget[0]
        if forget is None:
            raise UserError("the relearning attack trains on --forget-data")
        return PackedRows(self._tokenised(forget, tokenizer, "--forget-data"), self.args.seq_len,
                          what=f"--forget-data {self.args.forget_data} (its training part)")

    def attack_description(self) -> dict:
        a = self.args
        return {"forget_data": a.forget_data, "forget_eval": a.forget_eval, "seq_len": a.seq_len,
                "eval_docs": a.eval_docs, "split_seed": a.split_seed, "eval_fraction": a.eval_fraction}

    # -- evaluation ------------------------------------------------------------------------------
    def _held_out(self, side: str, tokenizer) -> DocumentRows:
        """The scored held-out documents of a side, made once per run (every evaluation reads the same)."""
        made = self._held_out_rows
        if side not in made:
            ds = (self._forget if side == "forget" else self._retain)[1]
            ds = ds.select(range(min(self.args.eval_docs, len(ds))))
            made[side] = DocumentRows(self._tokenised(ds, tokenizer, f"held-out {side} text"), self.args.seq_len)
        return made[side]

    def evaluation(self, tokenizer, kind, info):
        sides = ("forget",) if kind == "attack" else ("forget", "retain")
        rows = {side: self._held_out(side, tokenizer) for side in sides}

        questions = self.questions if kind == "final" else None

        def evaluate(model):
            result = {}
            for side, r in rows.items():
                m = cross_entropy_and_accuracy(model, r, tokenizer.pad_token_id, self.args.eval_batch,
                                               rank=info.rank, world=info.world_size, device=info.device)
                result.update({f"{side}_ce": m["ce"], f"{side}_top1": m["top1"], f"{side}_tokens": m["tokens"]})
            if questions:
                m = mcq_accuracy(model, tokenizer, questions, rank=info.rank, world=info.world_size, device=info.device)
                result.update({"mcq_acc": m["acc"], "mcq_questions": m["questions"]})
            return result

        return evaluate
