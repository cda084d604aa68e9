"""Pretrain a model: on the arithmetic testbed (all four operations, or retain-only: the gold standard), or on
your own text (--task text).

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/pretrain.py --ds_config ds_configs/zero3.json --out runs/base
    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 launch/pretrain.py --ds_config ds_configs/zero3.json \\
        --out runs/gold --filter-forget
    deepspeed launch/pretrain.py --ds_config ds_configs/zero3.json --task text --model MODEL_DIR \\
        --data corpus.jsonl --forget-data forget.jsonl --retain-data retain.jsonl --out runs/base
"""

import sys
from pathlib import Path

# `python launch/pretrain.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


import torch

from distill.ce_objective import add_loss_head_arg, causal_lm_loss, uses_fused_head
from distill.cli import Parser, add_train_args, deepspeed_config, run_main, train_config
from distill.dist import init_distributed
from distill.ds_config import load_ds_config
from distill.engine import Trainer
from distill.models import build_model, check_tokenizer_matches, model_config
from unlearn.experiment import PRETRAIN_DEFAULTS as DEFAULTS  # the experiment keys its stages on them
from unlearn.tasks import add_task_args


def parse_args(argv=None):
    p = Parser(description=__doc__)
    p.add_argument("--model", default="gemma2-tiny", help="preset name or a Hugging Face model directory")
    add_loss_head_arg(p)
    task = add_task_args(p, "pretrain", argv)
    add_train_args(p, DEFAULTS)
    args = p.parse_args(argv)
    return args, task(args, "pretrain")


def main():
    args, task = parse_args()
    tokenizer = task.tokenizer(args.model)
    check_tokenizer_matches(args.model, tokenizer)
    config = model_config(args.model, tokenizer)
    cfg = train_config(args)
    load_ds_config(args.ds_config)  # a wrong path fails here, before any process group starts
    dataset = task.training_rows(tokenizer, cfg.steps * cfg.global_batch, seed=cfg.seed)
    info = init_distributed()
    ds_config = deepspeed_config(args, cfg, info.world_size, config.hidden_size)
    objective = causal_lm_loss(args.loss_head, config.vocab_size)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    run = {"stage": "pretrain", "model": args.model, "task": task.name, "rows": task.rows_description(),
           "loss_head": "fused" if uses_fused_head(args.loss_head, config.vocab_size) else "logits"}
    trainer = Trainer(cfg, info, ds_config, args.model, tokenizer, dataset, objective, Path(args.out), run,
                      overwrite=args.overwrite, evaluate=task.evaluation(tokenizer, "periodic", info),
                      model_fn=lambda: build_model(args.model, tokenizer, ds_config, dtype=dtype))
    last = trainer.train()
    final = trainer.run_eval(cfg.steps, task.evaluation(tokenizer, "final", info))
    trainer.finish({"stage": "pretrain", "steps": cfg.steps, "final_loss": last.get("loss"),
                    "evaluation": final})
    if info.is_main:
        print(f"pretrained {args.out}: {task.headline(final)}")


if __name__ == "__main__":
    run_main(main)
