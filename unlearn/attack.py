"""The relearning attack: fine-tune a model on forget-domain data over an LR grid and seeds.

Each (learning rate, seed) is one short training run through the shared engine (`distill.engine`),
in its own run directory under `<output stem>.runs/`: AdamW at a constant LR, weight decay 0,
gradient clip 1.0, plain cross-entropy on the task's forget-domain rows, the task's forget metric
evaluated at step 0 and every `eval_every` steps (the strongest attacker is the most capable one in the
task's direction: highest accuracy, lowest cross-entropy). A finished run leaves `curve.json` and is
not run again, so an interrupted attack continues with the runs it had not finished (a run killed midway restarts, or
resumes from its checkpoint when --save-every is set).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from distill import dist, metrics, rundir
from distill.ce_objective import causal_lm_loss, uses_fused_head
from distill.dist import on_main
from distill.engine import TrainConfig, Trainer
from distill.errors import UserError
from distill.models import build_model, model_config
from unlearn.relearn import mean_over_seeds, relearning_area, strongest_attacker

CURVE = "curve.json"
DATA_SEED = 4242  # the attack's training problems, offset by the attack seed


@dataclass(frozen=True)
class AttackPlan:
    lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    steps: int
    eval_every: int
    data: dict = dataclasses.field(default_factory=dict)  # the task's attack data and evaluation settings

    def validate(self) -> None:
        if not self.lrs or any(not math.isfinite(lr) or lr <= 0 for lr in self.lrs):
            raise UserError(f"--lrs must be finite positive learning rates, got {list(self.lrs)}")
        if len(set(self.lrs)) != len(self.lrs) or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"--lrs {list(self.lrs)} and --seeds {list(self.seeds)} must not repeat a value")
        if not self.seeds:
            raise UserError("--seeds must name at least one seed")
        if self.eval_every < 1 or self.steps % self.eval_every:
            raise UserError(f"--eval-every {self.eval_every} must divide --steps {self.steps}: the curve needs a "
                            "point at the step budget")

    @property
    def eval_steps(self) -> list[int]:
        return list(range(0, self.steps + 1, self.eval_every))


def runs_dir(out: Path) -> Path:
    return out.with_name(out.stem + ".runs")


def part_name(lr: float, seed: int) -> str:
    return f"lr{lr:g}-seed{seed}"


def attack_one(ctx, lr: float, seed: int) -> list[float]:
    """One attack run; returns the task's forget metric at each of plan.eval_steps."""
    plan, info, key = ctx.plan, ctx.info, ctx.task.forget_metric
    out = runs_dir(ctx.out) / part_name(lr, seed)
    if (out / CURVE).is_file() and (out / rundir.RUN_CONFIG).is_file():
        saved = json.loads((out / CURVE).read_text())
        if saved.get("config") == ctx.part_config(lr, seed):
            return saved[key]
    cfg = dataclasses.replace(ctx.train, lr=lr, min_lr=lr, seed=seed)
    data = ctx.task.attack_rows(ctx.tokenizer, plan.steps * cfg.global_batch, seed=DATA_SEED + seed)
    objective = causal_lm_loss(ctx.loss_head, ctx.vocab_size)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    trainer = Trainer(cfg, info, ctx.ds_config, ctx.model, ctx.tokenizer, data, objective, out,
                      ctx.part_config(lr, seed), overwrite=False, evaluate=ctx.evaluate,
                      model_fn=lambda: build_model(ctx.model, ctx.tokenizer, ctx.ds_config, dtype=dtype))
    if trainer.start_step == 0:
        trainer.run_eval(0)
    trainer.train()
    trainer.run_eval(plan.steps)
    curve = None
    if info.is_main:
        evals = {r["step"]: r[f"eval/{key}"] for r in metrics.read_metrics(out / rundir.METRICS)
                 if f"eval/{key}" in r}
        curve = [evals[s] for s in plan.eval_steps]
        rundir.write_json(out / CURVE, {"config": ctx.part_config(lr, seed), "steps": plan.eval_steps,
                                        key: curve})
    curve = dist.broadcast_object(curve)
    del trainer
    gc.collect()
    return curve


@dataclass
class AttackContext:
    """What every attack run shares: the model, the plan, the engine settings, the evaluation."""
    model: str
    out: Path
    plan: AttackPlan
    train: TrainConfig
    info: object
    ds_config: dict
    tokenizer: object
    task: object  # unlearn.tasks.base.Task
    loss_head: str = "auto"  # distill.ce_objective.LOSS_HEADS

    def __post_init__(self):
        self.evaluate = self.task.evaluation(self.tokenizer, "attack", self.info)
        self.vocab_size = model_config(self.model, self.tokenizer).vocab_size

    def part_config(self, lr: float, seed: int) -> dict:
        """The run's configuration as it reads back from JSON (tuples become lists)."""
        config = {"stage": "relearn", "model": str(Path(self.model).resolve()), "lr": lr, "seed": seed,
                  "task": self.task.name, "plan": dataclasses.asdict(self.plan),
                  "loss_head": "fused" if uses_fused_head(self.loss_head, self.vocab_size) else "logits"}
        return json.loads(json.dumps(config))


def run_attack(ctx: AttackContext) -> dict:
    """Every (LR, seed) run, then the strongest-attacker curve and its area."""
    plan, key = ctx.plan, ctx.task.forget_metric
    curves = []
    for seed in plan.seeds:
        for lr in plan.lrs:
            if ctx.info.is_main:
                print(f"relearning attack on {ctx.model}: lr {lr:g}, seed {seed}", flush=True)
            curves.append({"lr": lr, "seed": seed, key: attack_one(ctx, lr, seed)})
    by_lr = mean_over_seeds(curves, key)
    best, best_lr = strongest_attacker(by_lr, higher_is_capable=ctx.task.higher_is_capable)
    return {"model": str(Path(ctx.model).resolve()), "plan": dataclasses.asdict(plan),
            "train": {k: v for k, v in dataclasses.asdict(ctx.train).items() if k not in ("lr", "min_lr", "seed")},
            "world_size": ctx.info.world_size, "task": ctx.task.name, "metric": key, "higher_is_capable":
                ctx.task.higher_is_capable, "steps": plan.eval_steps, key: best, "best_lr": best_lr,
            "area": relearning_area(plan.eval_steps, best), "by_lr": {f"{lr:g}": c for lr, c in by_lr.items()},
            "curves": curves}


def prepare_output(out: Path, overwrite: bool, info) -> None:
    """Refuse to replace a finished attack unless asked; with --overwrite start from nothing."""
    def check():
        if out.exists() and not overwrite:
            raise UserError(f"{out} already holds a finished attack; pass --overwrite to redo it")
        if overwrite:
            out.unlink(missing_ok=True)
            parts = runs_dir(out)
            if parts.exists():
                shutil.rmtree(parts)
        out.parent.mkdir(parents=True, exist_ok=True)
    on_main(info, check)
