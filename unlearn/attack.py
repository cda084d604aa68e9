"""The relearning attack: fine-tune a model on forget-domain data over an LR grid and seeds.

Each (learning rate, seed) is one short training run through the shared engine (`distill.engine`),
in its own run directory under `<output stem>.runs/`: AdamW at a constant LR, weight decay 0,
gradient clip 1.0, plain cross-entropy on forget-operation problems, forget accuracy evaluated at
step 0 and every `eval_every` steps. A finished run leaves `curve.json` and is not run again, so an
interrupted attack continues with the runs it had not finished (a run killed midway restarts, or
resumes from its checkpoint when --save-every is set).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from distill import dist, metrics, rundir
from distill.engine import TrainConfig, Trainer, on_main
from distill.errors import UserError
from distill.objective import CausalLMObjective
from unlearn.evaluate import score
from unlearn.relearn import mean_over_seeds, relearning_area, strongest_attacker
from unlearn.tasks.arithmetic import FORGET_OPS, eval_problems
from unlearn.tasks.problem_rows import ProblemRows

CURVE = "curve.json"
DATA_SEED = 4242  # the attack's training problems, offset by the attack seed


@dataclass(frozen=True)
class AttackPlan:
    lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    steps: int
    eval_every: int
    ops: tuple[str, ...] = FORGET_OPS
    formats: tuple[str, ...] = ("equation",)
    eval_per_op: int = 100
    word_fraction: float = 0.0

    def validate(self) -> None:
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise UserError(f"--lrs must be positive learning rates, got {list(self.lrs)}")
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

    def eval_set(self):
        n = -(-self.eval_per_op // len(self.formats))  # per op and format, so each op gets eval_per_op
        return [p for p in eval_problems(self.ops, n) if p.format in self.formats]


def runs_dir(out: Path) -> Path:
    return out.with_name(out.stem + ".runs")


def part_name(lr: float, seed: int) -> str:
    return f"lr{lr:g}-seed{seed}"


def attack_one(ctx, lr: float, seed: int) -> list[float]:
    """One attack run; returns forget accuracy at each of plan.eval_steps."""
    plan, info = ctx.plan, ctx.info
    out = runs_dir(ctx.out) / part_name(lr, seed)
    if (out / CURVE).is_file() and (out / rundir.RUN_CONFIG).is_file():
        saved = json.loads((out / CURVE).read_text())
        if saved.get("config") == ctx.part_config(lr, seed):
            return saved["forget_accuracy"]
    cfg = dataclasses.replace(ctx.train, lr=lr, min_lr=lr, seed=seed)
    data = ProblemRows(ctx.tokenizer, plan.ops, plan.steps * cfg.global_batch, seed=DATA_SEED + seed,
                       word_fraction=plan.word_fraction)
    trainer = Trainer(cfg, info, ctx.ds_config, ctx.model, ctx.tokenizer, data, CausalLMObjective(), out,
                      ctx.part_config(lr, seed), overwrite=False, evaluate=ctx.evaluate)
    if trainer.start_step == 0:
        trainer.run_eval(0)
    trainer.train()
    trainer.run_eval(plan.steps)
    curve = None
    if info.is_main:
        evals = {r["step"]: r["eval/forget_accuracy"] for r in metrics.read_metrics(out / rundir.METRICS)
                 if "eval/forget_accuracy" in r}
        curve = [evals[s] for s in plan.eval_steps]
        rundir.write_json(out / CURVE, {"config": ctx.part_config(lr, seed), "steps": plan.eval_steps,
                                        "forget_accuracy": curve})
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

    def __post_init__(self):
        self.problems = self.plan.eval_set()

    def evaluate(self, model) -> dict:
        return score(model, self.tokenizer, self.problems, rank=self.info.rank, world=self.info.world_size,
                     device=self.info.device)

    def part_config(self, lr: float, seed: int) -> dict:
        """The run's configuration as it reads back from JSON (tuples become lists)."""
        config = {"stage": "relearn", "model": str(Path(self.model).resolve()), "lr": lr, "seed": seed,
                  "plan": dataclasses.asdict(self.plan)}
        return json.loads(json.dumps(config))


def run_attack(ctx: AttackContext) -> dict:
    """Every (LR, seed) run, then the strongest-attacker curve and its area."""
    plan = ctx.plan
    curves = []
    for seed in plan.seeds:
        for lr in plan.lrs:
            if ctx.info.is_main:
                print(f"relearning attack on {ctx.model}: lr {lr:g}, seed {seed}", flush=True)
            curves.append({"lr": lr, "seed": seed, "forget_accuracy": attack_one(ctx, lr, seed)})
    by_lr = mean_over_seeds(curves)
    best, best_lr = strongest_attacker(by_lr)
    return {"model": str(Path(ctx.model).resolve()), "plan": dataclasses.asdict(plan),
            "train": {k: v for k, v in dataclasses.asdict(ctx.train).items() if k not in ("lr", "min_lr", "seed")},
            "world_size": ctx.info.world_size, "steps": plan.eval_steps, "forget_accuracy": best, "best_lr": best_lr,
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
