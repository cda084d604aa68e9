"""The relearning attack: does the forgotten capability come back after a little fine-tuning?

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/relearn.py --ds_config ds_configs/zero3.json \\
        --model runs/unlearned-maxent --out runs/relearn/unlearned-maxent.json

Fine-tunes the model on the task's forget-domain rows (arithmetic: forget-operation problems; --task text:
--forget-data; plain cross-entropy, AdamW at a constant LR, weight decay 0, clip 1.0) at every LR of --lrs
and every seed of --seeds, evaluates the forget metric (accuracy; text: cross-entropy on held-out forget
text) at step 0 and every --eval-every steps, and writes FILE.json: each run's curve, the strongest
attacker's curve (best LR per step, seeds averaged) and its relearning area (trapezoid area under that
curve divided by the step budget; for accuracy 0 = nothing comes back, 1 = fully capable from the start).
The runs live in FILE.runs/; an interrupted attack continues with the runs it had not finished.
"""

import sys
from pathlib import Path

# `python launch/relearn.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from distill import rundir
from distill.ce_objective import add_loss_head_arg
from distill.cli import Parser, add_train_args, deepspeed_config, run_main, train_config
from distill.dist import init_distributed
from distill.ds_config import load_ds_config
from distill.engine import TrainConfig
from distill.errors import UserError
from distill.knobs import listed, non_negative, positive
from distill.models import check_tokenizer_matches, has_weights, model_config
from unlearn.attack import AttackContext, AttackPlan, prepare_output, run_attack
from unlearn.tasks import add_task_args

DEFAULTS = TrainConfig(steps=150, global_batch=32, micro_batch=16, lr=1e-3, min_lr=1e-3, warmup_steps=0,
                       schedule="constant", weight_decay=0.0, grad_clip=1.0, eval_every=25, save_every=0)


def parse_args(argv=None):
    p = Parser(description=__doc__)
    p.add_argument("--model", required=True, help="the model to attack (a Hugging Face directory)")
    p.add_argument("--lrs", type=listed(float, positive), default="1e-4,3e-4,1e-3,3e-3",
                   help="the attacker's learning-rate grid")
    p.add_argument("--seeds", type=listed(int, non_negative), default="0",
                   help="attack seeds (data order); curves are averaged over them")
    add_loss_head_arg(p)
    task = add_task_args(p, "relearn", argv)
    add_train_args(p, DEFAULTS)
    args = p.parse_args(argv)
    if (args.lr, args.min_lr, args.schedule) != (DEFAULTS.lr, DEFAULTS.min_lr, DEFAULTS.schedule):
        p.error("the attack's learning rates come from --lrs (each constant); --lr, --min-lr and --schedule "
                "do not apply")
    return args, task(args, "relearn")


def attack_plan(args, task, steps: int) -> AttackPlan:
    try:
        plan = AttackPlan(lrs=args.lrs, seeds=args.seeds, steps=steps,
                          eval_every=args.eval_every, data=task.attack_description())
    except ValueError as e:
        raise UserError(f"attack settings: {e}") from e
    plan.validate()
    return plan


def main():
    args, task = parse_args()
    if not has_weights(args.model):
        model_config(args.model, None)  # names a missing directory or config.json precisely
        raise UserError(f"--model {args.model} has no safetensors weights (expected a trained model directory)")
    out = Path(args.out)
    if out.suffix != ".json":
        raise UserError(f"--out {args.out}: the attack writes one JSON file; name it FILE.json")
    tokenizer = task.tokenizer(args.model)
    check_tokenizer_matches(args.model, tokenizer)
    config = model_config(args.model, tokenizer)
    cfg = train_config(args)
    plan = attack_plan(args, task, cfg.steps)
    load_ds_config(args.ds_config)
    info = init_distributed()
    prepare_output(out, args.overwrite, info)
    ds_config = deepspeed_config(args, cfg, info.world_size, config.hidden_size)
    ctx = AttackContext(args.model, out, plan, cfg, info, ds_config, tokenizer, task, args.loss_head)
    result = run_attack(ctx)
    if info.is_main:
        rundir.write_json(out, result)
        curve = " ".join(f"{s}:{a:.2f}" for s, a in zip(result["steps"], result[task.forget_metric]))
        print(f"relearned {args.model}: strongest attacker {task.forget_metric} {curve}; area {result['area']:.3f}")


if __name__ == "__main__":
    run_main(main)
