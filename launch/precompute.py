"""Precompute a teacher's targets on the arithmetic testbed's training rows into a logit cache.

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/precompute.py --ds_config ds_configs/zero3.json \\
        --teacher runs/base --out runs/cache [--mode topk --top-k 64 | --mode sampled --samples 12]

The rows are the task's training rows, those the distillation stage trains on: on arithmetic, packed
problems of all four operations (--rows/--seq-len/--seed/--word-fraction default to launch/pretrain.py's
data); with --task text --data CORPUS, the corpus packed into rows of --seq-len tokens of the teacher's
own tokenizer (every row; --rows caps them). Run the same command again after a kill and it finishes the
shards that are missing; with other arguments it refuses.
"""

import sys
from pathlib import Path

# `python launch/precompute.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse

from torch.utils.data import Subset

from distill.cache import PrecomputeOptions, run_precompute
from distill.cli import Parser, run_main
from distill.ds_config import load_ds_config, resolve_precision
from distill.errors import UserError
from distill.knobs import add_knobs, at_least_one, check_knobs, checked, from_args, non_negative
from unlearn.tasks import add_task_args

PRETRAIN_ROWS = 1500 * 32  # launch/pretrain.py's default steps x global batch
DEFAULTS = PrecomputeOptions()


def parse_args(argv=None):
    p = Parser(description=__doc__)
    p.add_argument("--ds_config", "--ds-config", dest="ds_config", required=True,
                   help="DeepSpeed JSON config, e.g. ds_configs/zero3.json")
    p.add_argument("--teacher", required=True, help="Hugging Face model directory of the teacher (with weights)")
    p.add_argument("--out", required=True, help="cache directory")
    add_knobs(p.add_argument_group("targets and storage"), PrecomputeOptions, DEFAULTS)
    p.add_argument("--rows", type=checked(int, at_least_one), default=None,
                   help=f"records (packed rows) to compute (default: {PRETRAIN_ROWS} on arithmetic, every row of "
                        "the corpus on text)")
    p.add_argument("--seed", type=checked(int, non_negative), default=0,
                   help="data seed (row i is a function of (seed, i))")
    task = add_task_args(p, "precompute", argv)
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="teacher forward precision; auto: bf16 on GPUs that support it, fp32 on CPU")
    p.add_argument("--overwrite", action="store_true", help="delete an existing cache in --out first")
    p.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    args = p.parse_args(argv)
    check_knobs(from_args(PrecomputeOptions, args))  # before anything is written
    return args, task(args, "precompute")


def main():
    args, task = parse_args()
    if args.mode == "sampled" and args.samples is None:
        raise UserError("--mode sampled needs --samples N (draws per position)")
    if args.rows is not None and args.rows < 1:
        raise UserError(f"--rows must be >= 1, got {args.rows}")
    if not Path(args.teacher).is_dir():
        raise UserError(f"--teacher {args.teacher} is not a directory (expected a trained Hugging Face model)")
    load_ds_config(args.ds_config)  # a wrong path fails here, before any process group starts
    tokenizer = task.tokenizer(args.teacher)
    rows = args.rows or (PRETRAIN_ROWS if task.name == "arithmetic" else None)
    dataset = task.training_rows(tokenizer, rows or 0, seed=args.seed)
    if rows is not None and rows < len(dataset):
        dataset = Subset(dataset, range(rows))
    description = {**task.rows_description(), "rows": len(dataset), "seed": args.seed}
    options = from_args(PrecomputeOptions, args)
    run_precompute(args.teacher, tokenizer, dataset, description, args.ds_config, args.out, options,
                   precision=resolve_precision(args.precision), overwrite=args.overwrite)


if __name__ == "__main__":
    run_main(main)
