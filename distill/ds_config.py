"""DeepSpeed config files: load, fill the run-dependent values, refuse contradictions.

The JSON files in `ds_configs/` hold what does not depend on the run (ZeRO stage, offload, buckets) and
say "auto" for what does (batch sizes, precision, clipping, bucket sizes that scale with the model).
The launch script fills those from its own arguments. A concrete value that disagrees with the run is
an error naming both values, never silently overridden.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from distill.errors import UserError

PRECISIONS = ("auto", "bf16", "fp32")
MIN_BUCKET = 2 ** 21  # elements; see _fill_zero_sizes


@dataclass(frozen=True)
class RunShape:
    """The run's own numbers that a DeepSpeed config must agree with."""

    global_batch: int  # sequences per optimizer step, all ranks and accumulation steps together
    micro_batch: int  # sequences per forward pass on one rank
    world_size: int
    precision: str  # "bf16" or "fp32" (already resolved from "auto")
    grad_clip: float
    hidden_size: int  # sizes ZeRO-3's buckets and persistence threshold

    @property
    def grad_accum(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)


def resolve_precision(precision: str) -> str:
    """"auto" means bf16 on a GPU that supports it, fp32 otherwise (CPU ranks train in fp32)."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def check_batch_shape(global_batch: int, micro_batch: int, world_size: int) -> None:
    """The global batch must split evenly into micro-batches over all ranks."""
    if global_batch < 1 or micro_batch < 1:
        raise UserError(f"batch sizes must be positive: --global-batch {global_batch}, --micro-batch {micro_batch}")
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise UserError(
            f"--global-batch {global_batch} is not a multiple of --micro-batch {micro_batch} x world size "
            f"{world_size} = {per_step}: micro-batch x accumulation steps x world size must equal the global batch"
        )


def load_ds_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"DeepSpeed config {path} does not exist (expected a JSON file such as ds_configs/zero3.json)")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"DeepSpeed config {path} is not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise UserError(f"DeepSpeed config {path} must hold a JSON object, found {type(cfg).__name__}")
    return cfg


def _fill(cfg: dict, key: str, value, source: str, where: str) -> None:
    """Set cfg[key] to value when absent or "auto"; a different concrete value is an error."""
    current = cfg.get(key, "auto")
    if current == "auto":
        cfg[key] = value
    elif current != value:
        raise UserError(f"{where}: {key} is {current!r} but the run uses {value!r} ({source})")


def resolve_ds_config(path: str | Path, shape: RunShape) -> dict:
    """Return the DeepSpeed config for this run, every "auto" replaced, contradictions refused."""
    check_batch_shape(shape.global_batch, shape.micro_batch, shape.world_size)
    cfg = copy.deepcopy(load_ds_config(path))
    where = str(path)
    for section in ("optimizer", "scheduler"):
        if section in cfg:
            raise UserError(
                f"{where}: remove the {section!r} section; the optimizer and LR schedule are set by the "
                "run's arguments (--lr, --warmup, --weight-decay) so that every stage uses the same ones"
            )
    if cfg.get("fp16", {}).get("enabled") is True:
        raise UserError(f"{where}: fp16 is not supported (loss scaling changes the numbers); use bf16 or fp32")
    _fill(cfg, "train_batch_size", shape.global_batch, "--global-batch", where)
    _fill(cfg, "train_micro_batch_size_per_gpu", shape.micro_batch, "--micro-batch", where)
    _fill(cfg, "gradient_accumulation_steps", shape.grad_accum,
          f"--global-batch / (--micro-batch x world size {shape.world_size})", where)
    _fill(cfg, "gradient_clipping", float(shape.grad_clip), "--grad-clip", where)
    bf16 = cfg.setdefault("bf16", {})
    _fill(bf16, "enabled", shape.precision == "bf16", f"--precision {shape.precision}", f"{where} bf16")
    _fill_zero_sizes(cfg.setdefault("zero_optimization", {}), shape.hidden_size, where)
    return cfg


def _fill_zero_sizes(zero: dict, hidden: int, where: str) -> None:
    # Sizes that scale with the model, as commonly derived from the hidden size. The persistence
    # threshold stays small so a tiny model is still partitioned (tests exercise ZeRO-3). The buckets
    # get a floor of 2M elements (8 MB in fp32): hidden^2 alone made a hidden-128 model reduce its
    # gradients in ~30 collectives per micro-step, and steps took 1.4x as long on CPU ranks.
    derived = {
        "reduce_bucket_size": max(hidden * hidden, MIN_BUCKET),
        "stage3_prefetch_bucket_size": max(int(0.9 * hidden * hidden), MIN_BUCKET),
        "stage3_param_persistence_threshold": 10 * hidden,
    }
    for key, value in derived.items():
        if zero.get(key) == "auto":
            zero[key] = value
    left = [k for k, v in zero.items() if v == "auto"]
    if left:
        raise UserError(f"{where}: zero_optimization has 'auto' for {left}, which this run cannot derive")


def zero_stage(cfg: dict) -> int:
    return int(cfg.get("zero_optimization", {}).get("stage", 0))


def offloads_optimizer(cfg: dict) -> bool:
    device = cfg.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device not in (None, "none")
