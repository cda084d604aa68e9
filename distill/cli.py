"""Command-line plumbing shared by the training entry points (arguments, set-up, error exit)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from tqdm import tqdm

from distill.dist import shutdown
from distill.ds_config import RunShape, resolve_ds_config, resolve_precision
from distill.engine import TrainConfig
from distill.errors import UserError
from distill.knobs import add_knobs, from_args


class Parser(argparse.ArgumentParser):
    """argparse with the project's error form: a bad flag is one line on stderr (rank 0's), exit status 2."""

    def __init__(self, **kw):
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kw)

    def error(self, message):
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def add_train_args(p: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """The engine's knobs, with the stage's own defaults."""
    g = p.add_argument_group("training")
    g.add_argument("--ds_config", "--ds-config", dest="ds_config", required=True,
                   help="DeepSpeed JSON config, e.g. ds_configs/zero3.json ('auto' is filled from these arguments)")
    g.add_argument("--out", required=True, help="output directory (Hugging Face model + run files)")
    add_knobs(g, TrainConfig, defaults)
    g.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 on GPUs that support it, fp32 on CPU")
    g.add_argument("--overwrite", action="store_true", help="delete a finished or different run in --out first")
    g.add_argument("--scratch", default=os.environ.get("UNDO_SCRATCH"),
                   help="node-local directory for resume checkpoints (default: $UNDO_SCRATCH, else inside --out, "
                        "which must then be shared by all nodes); the model, metrics and summary always go to --out")
    p.add_argument("--local_rank", type=int, default=-1, help=argparse.SUPPRESS)  # set by the deepspeed launcher


def train_config(args) -> TrainConfig:
    """The validated TrainConfig of the arguments; call before starting any distributed work."""
    precision = resolve_precision(args.precision)
    cfg = from_args(TrainConfig, args, precision=precision, scratch=getattr(args, "scratch", None))
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
        rank = os.environ.get("RANK", "0")
        if rank == "0":  # tqdm.write clears rank 0's progress bar first, so the error is a line of its own
            tqdm.write(f"error: {e}", file=sys.stderr)
        elif e.local:  # another process: rank 0's bar may be half drawn on the same stream, so start a line
            print(f"\nerror (rank {rank}): {e}", file=sys.stderr)
        sys.exit(2)
