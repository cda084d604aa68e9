"""Unlearn the forget operations from a trained model (the result is UNDO's teacher).

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/unlearn.py --ds_config ds_configs/zero3.json \\
        --model runs/base --method maxent --out runs/unlearned-maxent [--hp retain_weight=2]

Methods: graddiff, maxent, rmu, npo, simnpo; each has defaults tuned for the arithmetic testbed
(`--hp key=value` overrides a method setting, the training flags override steps, LR, batch).
"""

import sys
from pathlib import Path

# `python launch/unlearn.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses

from distill.cli import add_train_args, deepspeed_config, run_main, train_config
from distill.dist import init_distributed
from distill.ds_config import load_ds_config
from distill.engine import TrainConfig, Trainer
from distill.errors import UserError
from distill.frozen import build_frozen
from distill.models import build_model, check_tokenizer_matches, has_weights, model_config
from unlearn.evaluate import score
from unlearn.methods import build_objective, get_method, parse_hparams
from unlearn.tasks.arithmetic import OPS, eval_problems
from unlearn.tasks.forget_retain import ForgetRetainDataset
from unlearn.tasks.tokenizer import build_char_tokenizer

BASE_DEFAULTS = dict(global_batch=128, micro_batch=64, eval_every=0, save_every=20)
PERIODIC_EVAL_SEED = 7


def parse_args(argv=None):
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--method", default="maxent")
    known, _ = first.parse_known_args(argv)
    method = get_method(known.method)
    defaults = TrainConfig(**{**BASE_DEFAULTS, **method.TRAIN_DEFAULTS})
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the trained model to unlearn from (a Hugging Face directory)")
    p.add_argument("--method", default="maxent", help="graddiff, maxent, rmu, npo or simnpo")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="override a method setting")
    p.add_argument("--forget-ops", default="*,/", help="operations to forget")
    p.add_argument("--retain-ops", default="+,-", help="operations to keep")
    p.add_argument("--word-fraction", type=float, default=0.0,
                   help="share of word problems in the unlearning data (the demo base model does not solve them)")
    p.add_argument("--eval-per-format", type=int, default=20, help="problems per op and format, periodic evals")
    p.add_argument("--final-eval-per-format", type=int, default=100, help="problems per op and format at the end")
    add_train_args(p, defaults)
    return p.parse_args(argv), method


def main():
    args, method = parse_args()
    hp = parse_hparams(method, args.hp)
    if not has_weights(args.model):
        model_config(args.model, None)  # names a missing directory or config.json precisely
        raise UserError(f"--model {args.model}: unlearning starts from a trained model, but it has no safetensors "
                        "weights (expected a directory written by launch/pretrain.py or any HF checkpoint)")
    tokenizer = build_char_tokenizer()
    check_tokenizer_matches(args.model, tokenizer)
    config = model_config(args.model, tokenizer)
    cfg = train_config(args)
    try:
        method.Objective.validate(hp, config)
        dataset = ForgetRetainDataset(tokenizer, args.forget_ops, args.retain_ops, cfg.steps * cfg.global_batch,
                                      seed=cfg.seed, word_fraction=args.word_fraction)
    except ValueError as e:
        raise UserError(str(e)) from e
    load_ds_config(args.ds_config)
    info = init_distributed()
    ds_config = deepspeed_config(args, cfg, info.world_size, config.hidden_size)
    reference = None
    if method.Objective.uses_reference(hp):
        reference = build_frozen(args.model, tokenizer, ds_config, info.device)
    objective = build_objective(method, hp, reference, config)

    def model_fn():
        model = build_model(args.model, tokenizer, ds_config)
        objective.select_trainable(model)
        return model

    periodic = eval_problems(OPS, args.eval_per_format, seed=PERIODIC_EVAL_SEED)

    def evaluate(model, problems=periodic):
        return score(model, tokenizer, problems, rank=info.rank, world=info.world_size, device=info.device)

    name = args.method
    run = {"stage": "unlearn", "model": str(Path(args.model).resolve()), "method": name,
           "hparams": dataclasses.asdict(hp), "forget_ops": list(dataset.forget_ops),
           "retain_ops": list(dataset.retain_ops), "word_fraction": args.word_fraction}
    trainer = Trainer(cfg, info, ds_config, args.model, tokenizer, dataset, objective, Path(args.out), run,
                      overwrite=args.overwrite, evaluate=evaluate, model_fn=model_fn)
    last = trainer.train()
    held_out = eval_problems(OPS, args.final_eval_per_format)
    final = trainer.run_eval(cfg.steps, lambda model: evaluate(model, held_out))
    trainer.finish({"stage": "unlearn", "method": name, "hparams": dataclasses.asdict(hp), "steps": cfg.steps,
                    "final_loss": last.get("loss"), "evaluation": final})
    if info.is_main:
        print(f"unlearned ({name}) {args.out}: retain {final['retain_accuracy']:.3f} "
              f"forget {final['forget_accuracy']:.3f} equations {final['equation_accuracy']}")


if __name__ == "__main__":
    run_main(main)
