import json

import pytest

from distill.ds_config import RunShape, check_batch_shape, resolve_ds_config
from distill.errors import UserError
from distill.launcher import REPO

SHIPPED = ["zero3.json", "zero3_offload.json", "zero2.json"]


def shape(**kw):
    base = dict(global_batch=32, micro_batch=8, world_size=2, precision="fp32", grad_clip=1.0, hidden_size=128)
    base.update(kw)
    return RunShape(**base)


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_shipped_configs_resolve_without_editing(name, precision):
    cfg = resolve_ds_config(REPO / "ds_configs" / name, shape(precision=precision))
    assert cfg["train_batch_size"] == 32
    assert cfg["train_micro_batch_size_per_gpu"] == 8
    assert cfg["gradient_accumulation_steps"] == 2
    assert cfg["gradient_clipping"] == 1.0
    assert cfg["bf16"]["enabled"] is (precision == "bf16")
    assert "auto" not in json.dumps(cfg)


def write(tmp_path, cfg):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(cfg))
    return path


def test_contradicting_global_batch_names_both_values(tmp_path):
    path = write(tmp_path, {"train_batch_size": 64, "zero_optimization": {"stage": 3}})
    with pytest.raises(UserError, match=r"train_batch_size is 64 but the run uses 32"):
        resolve_ds_config(path, shape())


def test_contradicting_micro_batch_and_precision(tmp_path):
    with pytest.raises(UserError, match=r"train_micro_batch_size_per_gpu is 4 but the run uses 8"):
        resolve_ds_config(write(tmp_path, {"train_micro_batch_size_per_gpu": 4}), shape())
    with pytest.raises(UserError, match=r"enabled is True but the run uses False"):
        resolve_ds_config(write(tmp_path, {"bf16": {"enabled": True}}), shape(precision="fp32"))


def test_accumulation_that_does_not_fit_the_world_size(tmp_path):
    # 32 = 8 x 2 x 2, so a config that fixes accumulation at 4 contradicts a 2-rank run.
    with pytest.raises(UserError, match=r"gradient_accumulation_steps is 4 but the run uses 2"):
        resolve_ds_config(write(tmp_path, {"gradient_accumulation_steps": 4}), shape())


def test_global_batch_must_split_over_ranks():
    with pytest.raises(UserError, match=r"--global-batch 30 is not a multiple of --micro-batch 8 x world size 2"):
        check_batch_shape(30, 8, 2)


def test_optimizer_section_and_fp16_are_refused(tmp_path):
    with pytest.raises(UserError, match="remove the 'optimizer' section"):
        resolve_ds_config(write(tmp_path, {"optimizer": {"type": "AdamW"}}), shape())
    with pytest.raises(UserError, match="fp16 is not supported"):
        resolve_ds_config(write(tmp_path, {"fp16": {"enabled": True}}), shape())


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_ds_config(tmp_path / "nope.json", shape())
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        resolve_ds_config(bad, shape())


def test_zero3_sizes_scale_with_the_model():
    cfg = resolve_ds_config(REPO / "ds_configs/zero3.json", shape(hidden_size=128))
    # Small enough that the tiny test model's matrices are partitioned, not kept whole on every rank.
    assert cfg["zero_optimization"]["stage3_param_persistence_threshold"] == 1280


def test_zero3_buckets_have_a_floor_and_grow_with_large_models():
    small = resolve_ds_config(REPO / "ds_configs/zero3.json", shape(hidden_size=128))["zero_optimization"]
    big = resolve_ds_config(REPO / "ds_configs/zero3.json", shape(hidden_size=3584))["zero_optimization"]
    assert small["reduce_bucket_size"] == small["stage3_prefetch_bucket_size"] == 2 ** 21
    assert big["reduce_bucket_size"] == 3584 * 3584
    assert big["stage3_prefetch_bucket_size"] == int(0.9 * 3584 * 3584)
