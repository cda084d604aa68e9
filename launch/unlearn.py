"""Unlearn the forget operations from a trained model (the result is UNDO's teacher).

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/unlearn.py --ds_config ds_configs/zero3.json \\
        --model runs/base --method maxent --out runs/unlearned-maxent [--hp retain_weight=2]

Methods: graddiff, maxent, rmu, npo, simnpo; each has defaults tuned for the arithmetic testbed
(`--hp key=value` overrides a method setting, the training flags override steps, LR, batch).
Your own model and text: --task text --forget-data F --retain-data R (documents, see unlearn/tasks/text.py).
"""

import sys
from pathlib import Path

# `python launch/unlearn.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dataclasses

from distill.ce_objective import add_loss_head_arg, uses_fused_head
from distill.cli import Parser, add_train_args, deepspeed_config, run_main, train_config
from distill.dist import init_distributed
from distill.ds_config import load_ds_config
from distill.engine import TrainConfig, Trainer
from distill.errors import UserError
from distill.frozen import build_frozen
from distill.models import build_model, check_tokenizer_matches, has_weights, model_config
from unlearn.methods import build_objective, get_method, parse_hparams
from unlearn.methods.terms import TermsModel
from unlearn.tasks import add_task_args

BASE_DEFAULTS = dict(global_batch=128, micro_batch=64, eval_every=0, save_every=20)


def parse_args(argv=None):
    first = Parser(add_help=False)
    first.add_argument("--method", default="maxent")
    known, _ = first.parse_known_args(argv)
    method = get_method(known.method)
    defaults = TrainConfig(**{**BASE_DEFAULTS, **method.TRAIN_DEFAULTS})
    p = Parser(description=__doc__)
    p.add_argument("--model", required=True, help="the trained model to unlearn from (a Hugging Face directory)")
    p.add_argument("--method", default="maxent", help="graddiff, maxent, rmu, npo or simnpo")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="override a method setting")
    add_loss_head_arg(p)
    task = add_task_args(p, "unlearn", argv)
    add_train_args(p, defaults)
    args = p.parse_args(argv)
    return args, method, task(args, "unlearn")


def main():
    args, method, task = parse_args()
    hp = parse_hparams(method, args.hp)
    if not has_weights(args.model):
        model_config(args.model, None)  # names a missing directory or config.json precisely
        raise UserError(f"--model {args.model}: unlearning starts from a trained model, but it has no safetensors "
                        "weights (expected a directory written by launch/pretrain.py or any HF checkpoint)")
    tokenizer = task.tokenizer(args.model)
    check_tokenizer_matches(args.model, tokenizer)
    config = model_config(args.model, tokenizer)
    cfg = train_config(args)
    try:
        method.Objective.validate(hp, config)
    except ValueError as e:
        raise UserError(str(e)) from e
    dataset = task.unlearning_rows(tokenizer, cfg.steps * cfg.global_batch, seed=cfg.seed)
    load_ds_config(args.ds_config)
    info = init_distributed()
    ds_config = deepspeed_config(args, cfg, info.world_size, config.hidden_size)
    fused = uses_fused_head(args.loss_head, config.vocab_size)
    reference = None
    if method.Objective.uses_reference(hp):
        reference = build_frozen(args.model, tokenizer, ds_config, info.device,
                                 wrap=lambda model: TermsModel(model, fused))
    objective = build_objective(method, hp, reference, config, fused)

    def model_fn():
        model = build_model(args.model, tokenizer, ds_config)
        objective.select_trainable(model)
        return model  # the objective puts it in its TermsModel (objective.wrap)

    name = args.method
    run = {"stage": "unlearn", "model": str(Path(args.model).resolve()), "method": name,
           "hparams": dataclasses.asdict(hp), "loss_head": "fused" if fused else "logits", "task": task.name,
           **task.unlearning_description(dataset)}
    trainer = Trainer(cfg, info, ds_config, args.model, tokenizer, dataset, objective, Path(args.out), run,
                      overwrite=args.overwrite, evaluate=task.evaluation(tokenizer, "periodic", info),
                      model_fn=model_fn)
    last = trainer.train()
    final = trainer.run_eval(cfg.steps, task.evaluation(tokenizer, "final", info))
    trainer.finish({"stage": "unlearn", "method": name, "hparams": dataclasses.asdict(hp), "steps": cfg.steps,
                    "final_loss": last.get("loss"), "evaluation": final})
    if info.is_main:
        print(f"unlearned ({name}) {args.out}: {task.headline(final)}")


if __name__ == "__main__":
    run_main(main)
