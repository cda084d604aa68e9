"""Pretrain a model on the arithmetic testbed (all four operations, or retain-only: the gold standard).

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/pretrain.py --ds_config ds_configs/zero3.json --out runs/base
    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/pretrain.py --ds_config ds_configs/zero3.json \\
        --out runs/gold --filter-forget
"""

import sys
from pathlib import Path

# `python launch/pretrain.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse

from distill.cli import add_train_args, deepspeed_config, run_main, train_config
from distill.dist import init_distributed
from distill.ds_config import load_ds_config
from distill.engine import TrainConfig, Trainer
from distill.errors import UserError
from distill.models import check_tokenizer_matches, model_config
from distill.objective import CausalLMObjective
from unlearn.evaluate import score
from unlearn.tasks.arithmetic import FORGET_OPS, OPS, RETAIN_OPS, PackedArithmeticDataset, eval_problems, parse_ops
from unlearn.tasks.tokenizer import build_char_tokenizer

PERIODIC_EVAL_SEED = 7  # a small fixed set for progress; the final report uses the task's evaluation set
DEFAULTS = TrainConfig(steps=1500, global_batch=32, micro_batch=16, lr=2e-3, min_lr=2e-4,
                       eval_every=250, save_every=250)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma2-tiny", help="preset name or a Hugging Face model directory")
    p.add_argument("--ops", default=None, help="operations to train on, e.g. '+,-,*,/' (default: all four)")
    p.add_argument("--filter-forget", action="store_true",
                   help="leave the forget operations (* and /) out of the data: the data-filtered gold standard")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per packed training row")
    p.add_argument("--word-fraction", type=float, default=0.05, help="share of word problems among examples")
    p.add_argument("--eval-per-format", type=int, default=20,
                   help="held-out problems per operation and format in periodic evaluations")
    p.add_argument("--final-eval-per-format", type=int, default=100,
                   help="held-out problems per operation and format in the final evaluation")
    add_train_args(p, DEFAULTS)
    return p.parse_args(argv)


def train_ops(args) -> tuple[str, ...]:
    ops = parse_ops(args.ops) if args.ops else OPS
    if args.filter_forget:
        if args.ops and set(ops) & set(FORGET_OPS):
            raise UserError(f"--filter-forget contradicts --ops {args.ops}: it removes {' '.join(FORGET_OPS)}")
        ops = tuple(op for op in ops if op in RETAIN_OPS)
    return ops


def main():
    args = parse_args()
    try:
        ops = train_ops(args)
    except ValueError as e:
        raise UserError(f"--ops: {e}") from e
    tokenizer = build_char_tokenizer()
    check_tokenizer_matches(args.model, tokenizer)
    config = model_config(args.model, tokenizer)
    cfg = train_config(args)
    load_ds_config(args.ds_config)  # a wrong path fails here, before any process group starts
    info = init_distributed()
    ds_config = deepspeed_config(args, cfg, info.world_size, config.hidden_size)
    dataset = PackedArithmeticDataset(tokenizer, ops, args.seq_len, num_rows=cfg.steps * cfg.global_batch,
                                      seed=cfg.seed, word_fraction=args.word_fraction)
    periodic = eval_problems(OPS, n_per_format=args.eval_per_format, seed=PERIODIC_EVAL_SEED)

    def evaluate(model, problems=periodic):
        return score(model, tokenizer, problems, rank=info.rank, world=info.world_size, device=info.device)

    run = {"stage": "pretrain", "model": args.model, "ops": list(ops), "seq_len": args.seq_len,
           "word_fraction": args.word_fraction}
    trainer = Trainer(cfg, info, ds_config, args.model, tokenizer, dataset, CausalLMObjective(), Path(args.out),
                      run, overwrite=args.overwrite, evaluate=evaluate)
    last = trainer.train()
    held_out = eval_problems(OPS, args.final_eval_per_format)  # the fixed evaluation set
    final = trainer.run_eval(cfg.steps, lambda model: evaluate(model, held_out))
    trainer.finish({"stage": "pretrain", "steps": cfg.steps, "final_loss": last.get("loss"),
                    "evaluation": final})
    if info.is_main:
        print(f"pretrained {args.out}: accuracy {final['accuracy']}")


if __name__ == "__main__":
    run_main(main)
