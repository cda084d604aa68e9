"""Job for test_sharpness: one sharpness-aware SGD step of the engine under ZeRO-3, weights written out.

    deepspeed --num_gpus N tests/distill/zero3_sam_job.py MODEL_DIR RUN_DIR OUT.safetensors RADIUS

Four packed arithmetic rows make the whole global batch (one per micro-batch: with 2 ranks each rank
accumulates two), plain next-token cross-entropy, SGD at LR 0.1, no clipping, no warm-up.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from safetensors.torch import save_file

from distill.dist import init_distributed, shutdown
from distill.ds_config import RunShape, resolve_ds_config
from distill.engine import TrainConfig, Trainer
from distill.export import gathered_state_dict
from distill.launcher import REPO
from distill.models import build_model
from distill.objective import CausalLMObjective
from unlearn.tasks.arithmetic import PackedArithmeticDataset
from unlearn.tasks.tokenizer import build_char_tokenizer

ROWS, SEQ_LEN, LR = 4, 32, 0.1


def main(model_dir: str, run_dir: str, out: str, radius: str) -> None:
    info = init_distributed()
    tok = build_char_tokenizer()
    cfg = TrainConfig(steps=1, global_batch=ROWS, micro_batch=1, lr=LR, optimizer="sgd", grad_clip=0.0,
                      warmup_steps=0, schedule="constant")
    shape = RunShape(global_batch=ROWS, micro_batch=1, world_size=info.world_size, precision="fp32",
                     grad_clip=0.0, hidden_size=64)
    ds_config = resolve_ds_config(REPO / "ds_configs/zero3.json", shape)
    objective = CausalLMObjective()
    objective.sharpness_radius = float(radius)
    data = PackedArithmeticDataset(tok, ["+", "*"], SEQ_LEN, num_rows=ROWS, seed=0)
    trainer = Trainer(cfg, info, ds_config, model_dir, tok, data, objective, Path(run_dir), {},
                      model_fn=lambda: build_model(model_dir, tok, ds_config))
    trainer.train()
    state = gathered_state_dict(trainer.engine.module, info.rank)
    if info.is_main:
        save_file(state, out)
    shutdown()


if __name__ == "__main__":
    main(*[a for a in sys.argv[1:] if not a.startswith("--local_rank")])
