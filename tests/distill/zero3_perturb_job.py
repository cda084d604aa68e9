"""Job for test_noise_zero3: perturb a model built partitioned under ZeRO-3, write the gathered result.

    deepspeed --num_gpus N tests/distill/zero3_perturb_job.py MODEL_DIR OUT.safetensors [BLOCK]

BLOCK overrides the noise block size (elements), so that a tiny model's weights span several blocks
and partitions start inside a block.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from safetensors.torch import save_file

from distill import noise
from distill.dist import init_distributed, shutdown
from distill.ds_config import RunShape, resolve_ds_config
from distill.export import gathered_state_dict
from distill.launcher import REPO
from distill.models import build_model
from distill.noise import shrink_and_perturb
from unlearn.tasks.tokenizer import build_char_tokenizer


def main(model_dir: str, out: str, block: str | None = None) -> None:
    if block is not None:
        noise.BLOCK = int(block)
    info = init_distributed()
    tok = build_char_tokenizer()
    shape = RunShape(global_batch=info.world_size, micro_batch=1, world_size=info.world_size, precision="fp32",
                     grad_clip=1.0, hidden_size=128)
    ds_config = resolve_ds_config(REPO / "ds_configs/zero3.json", shape)
    model = build_model(model_dir, tok, ds_config)
    assert all(p.numel() == 0 for p in model.parameters()), "expected a partitioned model"
    shrink_and_perturb(model, alpha=0.6, beta=0.1, seed=11)
    state = gathered_state_dict(model, info.rank)
    if info.is_main:
        save_file(state, out)
    shutdown()


if __name__ == "__main__":
    main(*[a for a in sys.argv[1:] if not a.startswith("--local_rank")])
