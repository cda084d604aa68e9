"""Precompute a teacher's targets on the arithmetic testbed's training rows into a logit cache.

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/precompute.py --ds_config ds_configs/zero3.json \\
        --teacher runs/base --out runs/cache [--mode topk --top-k 64 | --mode sampled --samples 12]

The rows are the PackedArithmeticDataset rows the distillation stage trains on (all four operations;
--rows/--seq-len/--seed/--word-fraction default to launch/pretrain.py's data). Run the same command
again after a kill and it finishes the shards that are missing; with other arguments it refuses.
"""

import sys
from pathlib import Path

# `python launch/precompute.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse

from distill.cache import PrecomputeOptions, run_precompute
from distill.cache.codec import MODES, TOPK
from distill.cli import run_main
from distill.ds_config import load_ds_config, resolve_precision
from distill.errors import UserError
from unlearn.tasks.arithmetic import OPS, PackedArithmeticDataset
from unlearn.tasks.tokenizer import build_char_tokenizer

PRETRAIN_ROWS = 1500 * 32  # launch/pretrain.py's default steps x global batch
DEFAULTS = PrecomputeOptions()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ds_config", "--ds-config", dest="ds_config", required=True,
                   help="DeepSpeed JSON config, e.g. ds_configs/zero3.json")
    p.add_argument("--teacher", required=True, help="Hugging Face model directory of the teacher (with weights)")
    p.add_argument("--out", required=True, help="cache directory")
    p.add_argument("--mode", default=TOPK, choices=MODES)
    p.add_argument("--top-k", type=int, default=DEFAULTS.k, help="topk mode: tokens kept per position")
    p.add_argument("--samples", type=int, default=None, help="sampled mode: draws per position")
    p.add_argument("--sampling-seed", type=int, default=0, help="sampled mode: seed of the draws")
    p.add_argument("--temperature", type=float, default=DEFAULTS.temperature)
    p.add_argument("--rows", type=int, default=PRETRAIN_ROWS, help="records (packed rows) to compute")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per row")
    p.add_argument("--seed", type=int, default=0, help="data seed (row i is a function of (seed, i))")
    p.add_argument("--word-fraction", type=float, default=0.05, help="share of word problems among examples")
    p.add_argument("--micro-batch", type=int, default=DEFAULTS.micro_batch, help="records per forward pass")
    p.add_argument("--records-per-shard", type=int, default=None, help="default: about 128K tokens per shard")
    p.add_argument("--chunk-records", type=int, default=None, help="default: about 8K tokens per chunk")
    p.add_argument("--zstd-level", type=int, default=DEFAULTS.zstd_level)
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="teacher forward precision; auto: bf16 on GPUs that support it, fp32 on CPU")
    p.add_argument("--overwrite", action="store_true", help="delete an existing cache in --out first")
    p.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    return p.parse_args(argv)


def main():
    args = parse_args()
    if args.mode == "sampled" and args.samples is None:
        raise UserError("--mode sampled needs --samples N (draws per position)")
    if args.rows < 1:
        raise UserError(f"--rows must be >= 1, got {args.rows}")
    if not Path(args.teacher).is_dir():
        raise UserError(f"--teacher {args.teacher} is not a directory (expected a trained Hugging Face model)")
    load_ds_config(args.ds_config)  # a wrong path fails here, before any process group starts
    tokenizer = build_char_tokenizer()
    try:
        dataset = PackedArithmeticDataset(tokenizer, OPS, args.seq_len, num_rows=args.rows, seed=args.seed,
                                          word_fraction=args.word_fraction)
    except ValueError as e:
        raise UserError(f"dataset options: {e}") from e
    description = {"kind": "arithmetic-packed", "ops": list(OPS), "seq_len": args.seq_len, "rows": args.rows,
                   "seed": args.seed, "word_fraction": args.word_fraction}
    options = PrecomputeOptions(mode=args.mode, k=args.top_k, samples=args.samples, temperature=args.temperature,
                                sampling_seed=args.sampling_seed, micro_batch=args.micro_batch,
                                records_per_shard=args.records_per_shard, chunk_records=args.chunk_records,
                                zstd_level=args.zstd_level)
    run_precompute(args.teacher, tokenizer, dataset, description, args.ds_config, args.out, options,
                   precision=resolve_precision(args.precision), overwrite=args.overwrite)


if __name__ == "__main__":
    run_main(main)
