"""The one training loop every stage runs: pretraining, unlearning, distillation, relearning.

A stage supplies a model spec, a map-style dataset, an `Objective` (see `distill.objective`) and
optionally an evaluation callback; the engine does the rest in a fixed order per optimizer step:
set the LR, fetch this rank's micro-batches, count targets across ranks, forward/backward each
micro-batch (DeepSpeed accumulates and clips), step, log, evaluate, checkpoint.

Launch, 1 machine with 2 processes (CPU: prefix DS_ACCELERATOR=cpu):
    deepspeed --num_gpus 2 launch/pretrain.py --ds_config ds_configs/zero3.json --out runs/base
"""

from __future__ import annotations

import dataclasses
import hashlib
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from distill import checkpoint, dist, rundir, sharpness
from distill.batches import MapBatches
from distill.data import GlobalBatchPlan, to_device
from distill.dist import DistInfo, on_main
from distill.errors import UserError
from distill.knobs import at_least_one, check_knobs, knob, non_negative, positive
from distill.metrics import MetricsLog
from distill.models import build_model, count_parameters
from distill.objective import Objective
from distill.schedule import lr_at

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class TrainConfig:
    """The engine's knobs; each field with a help is a flag of every training stage (`distill.knobs`)."""

    steps: int = knob(1000, "optimizer steps", check=at_least_one)
    global_batch: int = knob(32, "sequences per optimizer step over all ranks and accumulation steps",
                             check=at_least_one)
    micro_batch: int = knob(16, "sequences per forward pass per rank", check=at_least_one)
    lr: float = knob(2e-3, "peak learning rate", check=positive)
    optimizer: str = knob("adamw", "adamw (default), or sgd (no momentum: an update linear in the gradient, for "
                                   "comparing two code paths by their weights)", choices=OPTIMIZERS)
    min_lr: float = knob(0.0, "final learning rate of the decay", check=non_negative)
    warmup_steps: int | None = knob(None, "linear warm-up steps (default: the stage's, or 5%% of --steps)",
                                    flag="--warmup", check=non_negative)
    schedule: str = knob("cosine", "the learning-rate schedule after the warm-up", choices=SCHEDULES)
    weight_decay: float = knob(0.0, "decoupled weight decay (AdamW) or L2 (SGD)", check=non_negative)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = knob(1.0, "global gradient-norm clip (0: none)", check=non_negative)
    seed: int = knob(0, "seed of the data order, the noise and the init")
    eval_every: int = knob(0, "steps between evaluations (0: end only)", check=non_negative)
    save_every: int = knob(0, "steps between checkpoints (0: none)", check=non_negative)
    keep_checkpoints: int = knob(1, "resume checkpoints kept", check=at_least_one)
    precision: str = "fp32"  # resolved ("bf16" or "fp32") by the launch script from --precision
    scratch: str | None = None  # node-local directory for resume checkpoints; None: inside the output
    activation_checkpointing: bool = knob(False, "recompute every decoder layer's activations in the backward "
                                                 "(launch/estimate.py's 'checkpointed' micro-batches assume it)")

    def validate(self) -> None:
        check_knobs(self)
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"--schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if self.schedule != "constant" and self.min_lr > self.lr:
            raise UserError(f"--min-lr {self.min_lr:g} exceeds --lr {self.lr:g}: the {self.schedule} decay would "
                            "raise the learning rate (lower --min-lr, or use --schedule constant)")
        if self.warmup_steps is None:
            self.warmup_steps = round(0.05 * self.steps)
        if not 0 <= self.warmup_steps <= self.steps:
            raise UserError(f"--warmup {self.warmup_steps} must lie in [0, --steps {self.steps}]")
        for name in ("eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")


EvalFn = Callable[[torch.nn.Module], dict]


def hf_model(module: torch.nn.Module) -> torch.nn.Module:
    """The causal LM inside a trained module: itself, or the model a loss head wraps (`causal_lm`)."""
    return getattr(module, "causal_lm", module)


def make_optimizer(model, cfg: TrainConfig, ds_config: dict):
    """AdamW: DeepSpeed's CPU Adam where ZeRO offloads the optimizer, torch's (fused on CUDA) otherwise.

    SGD (no momentum) is there for comparisons of two code paths: its update is the learning rate times
    the gradient, so a gradient difference shows in the weights in proportion, where Adam's division by
    the root of the second moment can turn a last-bit difference in a near-zero gradient into a whole
    learning-rate step."""
    betas = (cfg.beta1, cfg.beta2)
    params = [p for p in model.parameters() if p.requires_grad]
    offload = ds_config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    if cfg.optimizer == "sgd":
        if offload not in (None, "none"):
            raise UserError("--optimizer sgd cannot run with the optimizer offloaded (DeepSpeed's CPU optimizer "
                            "is Adam); use a config without offload_optimizer")
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.0, weight_decay=cfg.weight_decay)
    if offload not in (None, "none"):
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        return DeepSpeedCPUAdam(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay, adamw_mode=True)
    fused = torch.cuda.is_available()
    return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay, fused=fused)


def peak_memory() -> dict[str, float]:
    """This rank's peak memory so far, GiB: host resident set, and the accelerator's allocations on CUDA."""
    peak = {"mem/host_peak_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}  # KiB
    if torch.cuda.is_available():
        peak["mem/device_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return peak


def scratch_dir(scratch: str, out: Path) -> Path:
    """This run's directory in a node-local scratch: named after the shared output, unique per output path."""
    tag = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:10]
    return Path(scratch) / f"{Path(out).name}-{tag}"


class Trainer:
    def __init__(self, cfg: TrainConfig, info: DistInfo, ds_config: dict, model_spec: str, tokenizer,
                 batches, objective: Objective, out: Path, run_config: dict, overwrite: bool = False,
                 evaluate: EvalFn | None = None, model_fn: Callable | None = None):
        """`batches`: a batch source (`distill.batches`: MapBatches, CacheBatches), or a map-style dataset
        (read through MapBatches), served in the order of `GlobalBatchPlan`."""
        cfg.validate()
        self.cfg, self.info, self.ds_config = cfg, info, ds_config
        self.tokenizer, self.objective = tokenizer, objective
        if not hasattr(batches, "micro_batch"):
            batches = MapBatches(batches, tokenizer.pad_token_id)
        self.batches = batches
        self.out, self.evaluate = Path(out), evaluate
        self.plan = GlobalBatchPlan(len(batches), cfg.global_batch, cfg.micro_batch, info.world_size,
                                    info.rank, cfg.seed)
        # Where a node keeps its resume state is not part of what the run computes: not compared on resume.
        train = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "scratch"}
        full_config = {"train": train, "world_size": info.world_size,
                       "deepspeed": ds_config, **run_config}
        self.mode = on_main(info, lambda: rundir.prepare(self.out, full_config, overwrite))
        if self.mode == "fresh" and cfg.scratch is not None:
            self._clear_scratch()
        self.log = MetricsLog(self.out / rundir.METRICS, info.is_main)
        torch.manual_seed(cfg.seed)
        dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
        model = model_fn() if model_fn else build_model(model_spec, tokenizer, ds_config, dtype=dtype)
        model = objective.wrap(model)  # in the head its loss needs
        if cfg.activation_checkpointing:  # recompute each decoder layer in the backward: memory for time
            hf_model(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.n_params = count_parameters(model)
        import deepspeed
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=make_optimizer(model, cfg, ds_config),
                                               config=ds_config)
        # A sharpness-aware objective (SAM) steps with the gradient at the worst-case nearby weights.
        self.radius = float(getattr(objective, "sharpness_radius", 0.0))
        if self.radius > 0:
            try:
                self.sam_params = sharpness.zero3_params(self.engine.module)
            except ValueError as e:
                raise UserError(str(e)) from e
        monitor = getattr(self.engine, "monitor", None)  # TensorBoard / W&B / CSV, when the config enables one
        self.log.monitor = monitor if monitor is not None and monitor.enabled else None
        self.start_step = 0
        if self.mode == "resume":
            self._resume()

    def _clear_scratch(self) -> None:
        """A fresh run must not find another attempt's node-local checkpoints (pruning keeps the newest)."""
        if self.info.local_rank == 0:
            shutil.rmtree(scratch_dir(self.cfg.scratch, self.out), ignore_errors=True)
        dist.barrier()

    def _resume(self) -> None:
        state = checkpoint.load(self.engine, self.ckpt_dir, self.info)
        if state is None:  # killed before its first checkpoint: start over, same config
            self.log.truncate_after(-1)  # and forget what the lost attempt logged
            return
        self.start_step = int(state["step"])
        self.log.truncate_after(self.start_step)
        if self.info.is_main:
            tqdm.write(f"resuming {self.out} from step {self.start_step}")

    @property
    def ckpt_dir(self) -> Path:
        """OUT/checkpoints, or with a node-local scratch SCRATCH/<out name>-<hash of its path>/checkpoints."""
        if self.cfg.scratch is None:
            return self.out / rundir.CHECKPOINTS
        return scratch_dir(self.cfg.scratch, self.out) / rundir.CHECKPOINTS

    # -- one optimizer step --------------------------------------------------------------------
    def _micro_batch(self, step: int, accum: int) -> dict:
        return self.batches.micro_batch(self.plan, step, accum)

    def _totals(self, batches: list[dict]) -> dict[str, float]:
        counts: dict[str, int] = {}
        for b in batches:
            for term, n in self.objective.count(b).items():
                counts[term] = counts.get(term, 0) + n
        terms = sorted(counts)
        t = dist.all_reduce_sum(torch.tensor([float(counts[k]) for k in terms], dtype=torch.float64))
        return dict(zip(terms, t.tolist()))

    def _train_step(self, step: int) -> dict:
        lr = lr_at(step, self.cfg.steps, self.cfg.lr, self.cfg.warmup_steps, self.cfg.min_lr, self.cfg.schedule)
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        batches = [self._micro_batch(step, a) for a in range(self.plan.grad_accum)]
        totals = self._totals(batches)
        sums: dict[str, torch.Tensor] = {"": torch.zeros((), dtype=torch.float64)}  # "": the step loss
        self.engine.train()
        restore, extra = self._to_worst_case(batches, totals) if self.radius > 0 else (None, {})
        for i, batch in enumerate(batches):
            batch = to_device(batch, self.info.device)
            loss, parts = self.objective(self.engine, batch, totals)
            self._backward(loss)
            if restore is not None and i == len(batches) - 1:
                restore()  # the gradient was taken at the perturbed weights; the step applies it to w
            self.engine.step()
            sums[""] += loss.detach().double().cpu()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0) + v.detach().double().cpu()
        terms = sorted(sums)
        reduced = dict(zip(terms, dist.all_reduce_sum(torch.stack([torch.as_tensor(sums[k]) for k in terms])).tolist()))
        # "loss" is the optimised step loss; loss/<term> each term's own mean over its targets.
        record = {"step": step + 1, "lr": lr, "loss": reduced.pop("")}
        record.update({f"loss/{k}": v / max(totals.get(k, 1.0), 1.0) for k, v in reduced.items()})
        record.update({f"tokens/{k}": int(totals[k]) for k in totals})
        record.update(extra)
        record.update(peak_memory())
        return record

    def _backward(self, loss: torch.Tensor) -> None:
        # DeepSpeed averages gradients over ranks; the loss is already a share of the global
        # mean, so undo that average (and skip its 1/accumulation scaling).
        self.engine.backward(loss * self.info.world_size, scale_wrt_gas=False)

    def _to_worst_case(self, batches: list[dict], totals: dict) -> tuple[Callable[[], None], dict]:
        """SAM's first pass: the step's gradient at the current weights (backward, no step), then the
        weights moved by radius along it (`distill.sharpness`) and the gradient cleared for the real pass."""
        for batch in batches:
            loss, _ = self.objective(self.engine, to_device(batch, self.info.device), totals)
            self._backward(loss)
        norm, restore = sharpness.perturb(self.sam_params, self.radius)
        self.engine.optimizer.zero_grad()
        return restore, {"sam/grad_norm": norm}

    # -- the loop ------------------------------------------------------------------------------
    def run_eval(self, step: int, evaluate: EvalFn | None = None) -> dict:
        """Evaluate the model (every rank together) and log the result under eval/ at `step`."""
        self.engine.eval()
        with torch.no_grad():
            result = (evaluate or self.evaluate)(hf_model(self.engine.module))
        self.engine.train()
        self.log.write({"step": step, **{f"eval/{k}": v for k, v in result.items()}})
        return result

    def _save(self, step: int) -> None:
        client = {"step": step, "samples_seen": self.plan.samples_seen(step)}
        checkpoint.save(self.engine, self.ckpt_dir, step, client, self.info, keep=self.cfg.keep_checkpoints,
                        node_local=self.cfg.scratch is not None)

    def train(self, stop: Callable[[dict], bool] | None = None) -> dict:
        """Run to the step budget, or until `stop(evaluation)` says so after a periodic evaluation
        (then `self.stopped_at` is that step). Returns the last step's metrics record."""
        cfg, t0 = self.cfg, time.time()
        self.stopped_at = None
        bar = tqdm(total=cfg.steps, initial=self.start_step, disable=not self.info.is_main,
                   desc=self.out.name, dynamic_ncols=True, mininterval=2.0)
        record: dict = {}
        for step in range(self.start_step, cfg.steps):
            record = self._train_step(step)
            record["elapsed_s"] = round(time.time() - t0, 3)
            self.log.write(record)
            bar.update(1)
            losses = {k.split("/")[-1]: f"{v:.4f}" for k, v in record.items() if k.startswith("loss")}
            bar.set_postfix(losses, refresh=False)
            done = step + 1
            # The last step's evaluation is left to the caller's final one, except where a stop criterion
            # is checked: a criterion first met at the budget is met, not "stopped at the budget".
            if (cfg.eval_every and done % cfg.eval_every == 0 and self.evaluate
                    and (done < cfg.steps or stop is not None)):
                result = self.run_eval(done)
                if stop is not None and stop(result):
                    self.stopped_at = done
                    self.log.write({"step": done, "stopped_by_criterion": True})
                    break
            if cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
                self._save(done)
        bar.close()
        return record

    def finish(self, summary: dict) -> None:
        """Export the model in Hugging Face format, then mark the run finished with summary.json."""
        from distill.export import export_hf
        export_hf(hf_model(self.engine.module), self.tokenizer, self.out, self.info.rank)
        if self.info.is_main:
            rundir.write_json(self.out / rundir.SUMMARY, {"parameters": self.n_params, **summary})
        dist.barrier()
