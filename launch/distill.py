"""Distill an unlearned teacher into a perturbed (or fresh) student: the "Distill" of UNDO.

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/distill.py --ds_config ds_configs/zero3.json \\
        --teacher runs/unlearned-maxent --online --alpha 0.6 --beta 0.1 --out runs/undo-maxent-a0.6

With only --ds_config it distills the demo teacher (runs/unlearned-maxent) at alpha 1 (fresh init:
Unlearn-and-Distill). The student is the teacher shrunk and perturbed, p <- (1 - alpha) p + alpha beta N,
or another architecture (--student PRESET|DIR) sharing the teacher's tokenizer. Training stops when the
student's retain metric is within --retain-gap of the teacher's (arithmetic: accuracy, an absolute gap;
--task text: cross-entropy, a relative gap), or at --steps. Your own model and corpora:

    deepspeed launch/distill.py --ds_config ds_configs/zero3.json --task text --teacher runs/unlearned \\
        --data corpus.jsonl --forget-data forget.jsonl --retain-data retain.jsonl --cache runs/cache --alpha 1
"""

import sys
from pathlib import Path

# `python launch/distill.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dataclasses
from dataclasses import dataclass

from distill import metrics, rundir
from distill.cache import CacheBatches, Expected, open_cache, teacher_fingerprint, tokenizer_fingerprint
from distill.cli import Parser, add_train_args, deepspeed_config, run_main, train_config
from distill.dist import init_distributed
from distill.ds_config import load_ds_config
from distill.engine import TrainConfig, Trainer
from distill.errors import UserError
from distill.frozen import build_frozen
from distill.kd_objective import CachedDistillObjective, OnlineDistillObjective
from distill.knobs import (
    add_knobs,
    check_knobs,
    checked,
    from_args,
    knob,
    non_negative,
    positive,
    unit_interval,
    valid_regex,
)
from distill.models import build_model, check_tokenizer_matches, count_parameters, has_weights, model_config
from distill.noise import shrink_and_perturb
from unlearn.tasks import add_task_args

DEMO_TEACHER = "runs/unlearned-maxent"
DEMO_CACHE = "runs/cache-maxent"
MAKE_DEMO_CACHE = (f"deepspeed --num_gpus 2 launch/precompute.py --ds_config ds_configs/zero3.json "
                   f"--teacher {DEMO_TEACHER} --out {DEMO_CACHE}")
@dataclass
class StudentKnobs:
    """The student and its loss; recorded in the run config as they are."""

    student: str = knob("perturb", "'perturb' (the teacher, shrunk and perturbed), or a preset / directory of "
                                   "another model")
    alpha: float = knob(1.0, "shrink-and-perturb mix: 0 = teacher, 1 = fresh", check=unit_interval)
    beta: float | None = knob(None, "noise scale (default: 1.0 at alpha 1, else 0.1)", check=non_negative)
    perturb_pattern: str = knob(".*", "regex over parameter names to perturb", check=valid_regex)
    temperature: float = knob(1.0, "softmax temperature of teacher and student", check=positive)
    loss_head: str = knob("fused", "fused: the KL straight from the final hidden states, chunked, never holding "
                                   "the (tokens x vocab) logits; logits: on the model's materialised logits (for "
                                   "comparison)", choices=("fused", "logits"))


DEFAULTS = TrainConfig(steps=1200, global_batch=32, micro_batch=16, lr=2e-3, min_lr=2e-4, eval_every=100,
                       save_every=100)


def parse_args(argv=None):
    p = Parser(description=__doc__)
    p.add_argument("--teacher", default=DEMO_TEACHER, help="the unlearned teacher (a Hugging Face directory)")
    p.add_argument("--cache", default=None,
                   help=f"teacher-logit cache from launch/precompute.py (default with the demo teacher: {DEMO_CACHE})")
    p.add_argument("--online", action="store_true",
                   help="targets from the teacher run alongside the student (dense KL) instead of a cache")
    p.add_argument("--rows-from-cache", default=None, metavar="CACHE",
                   help="with --online: train on CACHE's rows in the order a --cache run reads them, its targets "
                        "unused (an ablation where only the targets differ from --cache CACHE)")
    p.add_argument("--no-verify-cache", dest="verify_cache", action="store_false",
                   help="skip the sha256 check of every cache shard before the first step (for a cache verified "
                        "already; each compressed frame is still checked when read)")
    add_knobs(p.add_argument_group("distillation"), StudentKnobs, StudentKnobs())
    task = add_task_args(p, "distill", argv)
    p.add_argument("--retain-gap", type=checked(float), default=0.05,
                   help=f"stop when the student's retain metric is this close to the teacher's: {task.gap_help}")
    add_train_args(p, DEFAULTS)
    for action in p._actions:  # --out defaults to a name derived from the teacher and alpha
        if action.dest == "out":
            action.required, action.default = False, None
    args = p.parse_args(argv)
    if args.online and args.cache:
        p.error("--online and --cache exclude each other")
    if args.rows_from_cache and not args.online:
        p.error("--rows-from-cache goes with --online (a --cache run reads its own cache's rows)")
    if not args.online and args.cache is None:
        if args.teacher != DEMO_TEACHER:
            p.error("choose the targets: --cache CACHE (from launch/precompute.py) or --online")
        args.cache = DEMO_CACHE
    if args.beta is None:
        args.beta = 1.0 if args.alpha == 1.0 else 0.1
    check_knobs(from_args(StudentKnobs, args))  # before anything is written
    if args.out is None:
        args.out = f"runs/undo-{Path(args.teacher).name.removeprefix('unlearned-')}-alpha{args.alpha:g}"
    return args, task(args, "distill")


def check_teacher(args, tokenizer):
    if not has_weights(args.teacher):
        if args.teacher == DEMO_TEACHER and not Path(args.teacher).exists():
            raise UserError(f"the demo teacher {DEMO_TEACHER} does not exist yet; make it with `make demo` or\n"
                            "  deepspeed --num_gpus 2 launch/pretrain.py --ds_config ds_configs/zero3.json "
                            "--out runs/base\n  deepspeed --num_gpus 2 launch/unlearn.py --ds_config "
                            "ds_configs/zero3.json --model runs/base --method maxent --out runs/unlearned-maxent")
        model_config(args.teacher, tokenizer)
        raise UserError(f"--teacher {args.teacher} has no safetensors weights")
    check_tokenizer_matches(args.teacher, tokenizer)
    if args.student != "perturb":
        check_tokenizer_matches(args.student, tokenizer)


def open_targets(args, task, tokenizer):
    """The manifest of the cache the run reads, checked against it (tokenizer, vocab; for targets also the
    teacher and temperature), or None when online on rows of its own. The student's head reads the
    tokenizer's rows of its output matrix, so every cached id must lie below the tokenizer's size: a cache
    whose ids may reach past it is refused here, before the first step."""
    student_vocab = len(tokenizer)
    if args.online:
        if args.rows_from_cache is None:
            return None
        expected = Expected(vocab_size=student_vocab, tokenizer=tokenizer_fingerprint(tokenizer))
        return open_cache(args.rows_from_cache, expected)  # rows only: any teacher's cache will do
    if args.cache == DEMO_CACHE and not Path(DEMO_CACHE).exists():
        raise UserError(f"the demo cache {DEMO_CACHE} does not exist yet; make it with\n  {MAKE_DEMO_CACHE}")
    expected = Expected(vocab_size=student_vocab, tokenizer=tokenizer_fingerprint(tokenizer),
                        teacher=teacher_fingerprint(args.teacher))
    manifest = open_cache(args.cache, expected)
    task.check_cache_rows(manifest.plan.dataset_description, args.cache, tokenizer)
    if manifest.plan.temperature != args.temperature:
        raise UserError(f"--temperature {args.temperature} differs from the cache's {manifest.plan.temperature}: "
                        "its targets were computed at that temperature")
    return manifest


def main():
    args, task = parse_args()
    tokenizer = task.tokenizer(args.teacher)
    check_teacher(args, tokenizer)
    s_spec = args.teacher if args.student == "perturb" else args.student
    s_config = model_config(s_spec, tokenizer)
    cfg = train_config(args)
    manifest = open_targets(args, task, tokenizer)
    load_ds_config(args.ds_config)
    info = init_distributed()
    ds_config = deepspeed_config(args, cfg, info.world_size, s_config.hidden_size)
    if manifest is None:
        batches = task.training_rows(tokenizer, cfg.steps * cfg.global_batch, seed=cfg.seed + 1)
    else:  # verifies every shard first (unless --no-verify-cache): a damaged cache stops before any step
        batches = CacheBatches(args.rows_from_cache or args.cache, manifest, info.rank, info.world_size, cfg.seed,
                               verify=args.verify_cache)
    teacher = build_frozen(args.teacher, tokenizer, ds_config, info.device)
    # A validation set of its own (not the final test set): the stop decision rests on it.
    evaluate = task.evaluation(tokenizer, "criterion", info)
    teacher_eval = evaluate(teacher)
    n_teacher = count_parameters(teacher)

    fused = args.loss_head == "fused"
    if args.online:
        objective = OnlineDistillObjective(teacher, len(tokenizer), args.temperature, fused=fused)
    else:
        del teacher  # only its evaluation was needed: the cache holds its outputs
        objective = CachedDistillObjective(manifest.plan.mode, len(tokenizer), args.temperature, fused=fused)

    def model_fn():
        model = build_model(s_spec, tokenizer, ds_config)
        if args.student == "perturb":
            try:
                shrink_and_perturb(model, args.alpha, args.beta, seed=cfg.seed, pattern=args.perturb_pattern)
            except ValueError as e:
                raise UserError(str(e)) from e
        return model  # the objective puts it in its loss head (objective.wrap)

    targets = (f"cache:{Path(args.cache).resolve()}" if not args.online else
               "online" if manifest is None else f"online:rows-of:{Path(args.rows_from_cache).resolve()}")
    run = {"stage": "distill", "teacher": str(Path(args.teacher).resolve()),
           **dataclasses.asdict(from_args(StudentKnobs, args)), "targets": targets, "retain_gap": args.retain_gap,
           "task": task.name, "rows": task.rows_description()}
    trainer = Trainer(cfg, info, ds_config, s_spec, tokenizer, batches, objective, Path(args.out), run,
                      overwrite=args.overwrite, evaluate=evaluate, model_fn=model_fn)
    criterion, stop = task.criterion(teacher_eval, args.retain_gap)
    trainer.train(stop=stop)
    steps = trainer.stopped_at or cfg.steps
    final = trainer.run_eval(steps, task.evaluation(tokenizer, "final", info))
    tokens = metrics.total(Path(args.out) / rundir.METRICS, "tokens/kd") if info.is_main else 0.0
    n_student = count_parameters(trainer.engine.module)
    teacher_flops = 2.0 * n_teacher * tokens if args.online else 0.0  # a cache was paid for once, earlier
    trainer.finish({"stage": "distill", "stopped_by_criterion": trainer.stopped_at is not None, "steps": steps,
                    "tokens": int(tokens), "flops": 6.0 * n_student * tokens + teacher_flops,
                    "flops_note": "6 x student params per token, + 2 x teacher params per token when online "
                                  "(no attention term)", "targets": targets,
                    "alpha": args.alpha, "beta": args.beta, f"teacher_{task.retain_metric}": teacher_eval[
                        task.retain_metric], "criterion": criterion, "evaluation": final})
    if info.is_main:
        print(f"distilled {args.out}: {steps} steps (criterion {'met' if trainer.stopped_at else 'not met'}), "
              f"{task.headline(final)}")


if __name__ == "__main__":
    run_main(main)
