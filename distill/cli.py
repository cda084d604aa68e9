"""Command-line plumbing shared by the training entry points (arguments, set-up, error exit)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from distill.dist import shutdown
from distill.ds_config import RunShape, resolve_ds_config, resolve_precision
from distill.engine import TrainConfig
from distill.errors import UserError


def add_train_args(p: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """The engine's knobs, with the stage's own defaults."""
    g = p.add_argument_group("training")
    g.add_argument("--ds_config", "--ds-config", dest="ds_config", required=True,
                   help="DeepSpeed JSON config, e.g. ds_configs/zero3.json ('auto' is filled from these arguments)")
    g.add_argument("--out", required=True, help="output directory (Hugging Face model + run files)")
    g.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps")
    g.add_argument("--global-batch", type=int, default=defaults.global_batch,
                   help="sequences per optimizer step over all ranks and accumulation steps")
    g.add_argument("--micro-batch", type=int, default=defaults.micro_batch, help="sequences per forward pass per rank")
    g.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    g.add_argument("--optimizer", default=defaults.optimizer, choices=("adamw", "sgd"),
                   help="adamw (default), or sgd (no momentum: an update linear in the gradient, for comparing "
                        "two code paths by their weights)")
    g.add_argument("--min-lr", type=float, default=defaults.min_lr, help="final learning rate of the decay")
    g.add_argument("--warmup", type=int, default=defaults.warmup_steps,
                   help="linear warm-up steps (default: the stage's, or 5%% of --steps)")
    g.add_argument("--schedule", default=defaults.schedule, choices=("cosine", "linear", "constant"))
    g.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    g.add_argument("--grad-clip", type=float, default=defaults.grad_clip, help="global gradient-norm clip")
    g.add_argument("--seed", type=int, default=defaults.seed)
    g.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 on GPUs that support it, fp32 on CPU")
    g.add_argument("--eval-every", type=int, default=defaults.eval_every,
                   help="steps between evaluations (0: end only)")
    g.add_argument("--save-every", type=int, default=defaults.save_every, help="steps between checkpoints (0: none)")
    g.add_argument("--keep-checkpoints", type=int, default=defaults.keep_checkpoints)
    g.add_argument("--overwrite", action="store_true", help="delete a finished or different run in --out first")
    g.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute every decoder layer's activations in the backward (launch/estimate.py's "
                        "'checkpointed' micro-batches assume it)")
    g.add_argument("--scratch", default=os.environ.get("UNDO_SCRATCH"),
                   help="node-local directory for resume checkpoints (default: $UNDO_SCRATCH, else inside --out, "
                        "which must then be shared by all nodes); the model, metrics and summary always go to --out")
    p.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by the deepspeed launcher


def train_config(args) -> TrainConfig:
    """The validated TrainConfig of the arguments; call before starting any distributed work."""
    precision = resolve_precision(args.precision)
    cfg = TrainConfig(steps=args.steps, global_batch=args.global_batch, micro_batch=args.micro_batch,
                      lr=args.lr, optimizer=args.optimizer, min_lr=args.min_lr, warmup_steps=args.warmup,
                      schedule=args.schedule,
                      weight_decay=args.weight_decay, grad_clip=args.grad_clip, seed=args.seed,
                      eval_every=args.eval_every, save_every=args.save_every,
                      keep_checkpoints=args.keep_checkpoints, precision=precision,
                      scratch=getattr(args, "scratch", None),
                      activation_checkpointing=getattr(args, "activation_checkpointing", False))
    cfg.validate()
    return cfg


def deepspeed_config(args, cfg: TrainConfig, world_size: int, hidden_size: int) -> dict:
    """The filled-in DeepSpeed config for this run, every inconsistency refused."""
    shape = RunShape(cfg.global_batch, cfg.micro_batch, world_size, cfg.precision, cfg.grad_clip, hidden_size)
    config = resolve_ds_config(args.ds_config, shape)
    if cfg.scratch is not None:  # each node saves its own ranks' checkpoint files in its own scratch
        config.setdefault("checkpoint", {})["use_node_local_storage"] = True
    return config


def run_main(main: Callable[[], None]) -> None:
    """Run an entry point; bad input prints one clear line (once, from rank 0) and exits with 2.

    After a successful run every rank waits for the others and tears the process group down: a rank
    that exits while its peers still work can abort in the communication library's destructors."""
    try:
        main()
        shutdown()
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
