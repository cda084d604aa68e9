from collections import Counter

import pytest
import torch

from distill.data import IGNORE_INDEX, GlobalBatchPlan, collate


def step_samples(length, world, micro, global_batch, step, seed=0):
    """All sample indices of one optimizer step, over every rank and accumulation step."""
    out = []
    for rank in range(world):
        plan = GlobalBatchPlan(length, global_batch, micro, world, rank, seed)
        for a in range(plan.grad_accum):
            out += plan.micro_indices(step, a)
    return sorted(out)


@pytest.mark.parametrize("world,micro", [(2, 4), (4, 2), (2, 2)])
def test_global_batch_is_the_same_on_any_world_size(world, micro):
    for step in range(7):
        assert step_samples(50, world, micro, 8, step) == step_samples(50, 1, 8, 8, step)


def test_each_epoch_covers_every_sample_once_in_a_new_order():
    plan = GlobalBatchPlan(24, 8, 4, 1, 0, seed=3)
    epochs = [[i for s in range(e * 3, e * 3 + 3) for a in range(2) for i in plan.micro_indices(s, a)]
              for e in range(2)]
    for order in epochs:
        assert Counter(order) == Counter(range(24))
    assert epochs[0] != epochs[1]


def test_order_depends_on_seed_only():
    a = GlobalBatchPlan(100, 8, 4, 1, 0, seed=1)
    b = GlobalBatchPlan(100, 8, 4, 1, 0, seed=1)
    c = GlobalBatchPlan(100, 8, 4, 1, 0, seed=2)
    assert a.micro_indices(5, 1) == b.micro_indices(5, 1) != c.micro_indices(5, 1)


def test_collate_pads_and_never_counts_padding():
    batch = collate([{"input_ids": [1, 5, 6]}, {"input_ids": [1, 7], "labels": [IGNORE_INDEX, 7]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, 0]]
    assert batch["labels"].tolist() == [[1, 5, 6], [IGNORE_INDEX, 7, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["input_ids"].dtype == torch.long


def test_empty_dataset_is_refused():
    with pytest.raises(ValueError, match="empty"):
        GlobalBatchPlan(0, 8, 4, 1, 0, seed=0)
