"""ZeRO-3, 2 ranks: the fused-linear KL loss, called as the module that holds a tied output matrix,
gives the same loss and gradients as the unsharded reference on materialised logits.

A tiny student (embedding tied to the output matrix, one tanh layer, the loss head sharing the
embedding's Parameter) is built partitioned under ``deepspeed.zero.Init``; every rank takes its share
of one global batch, normalises its summed loss by the global count of counted rows, and backpropagates
through the engine. The full gradients (``safe_get_full_grad``: gathered from ZeRO's partitions) are
compared with those of an unsharded copy that runs the whole batch through the reference. Rank 0 writes
the numbers to --out for tests/distill/losses/test_kl_zero3.py to check.

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 tests/distill/losses/zero3_fused_linear_kl.py --out r.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository's packages first

import argparse
import copy
import json

import deepspeed
import torch
from deepspeed.utils import safe_get_full_grad

from distill.dist import all_reduce_sum, init_distributed, shutdown
from distill.losses import KINDS, FusedLinearKL, fused_linear_kl, reference_kl
from distill.losses.synthetic import teacher_target

VOCAB, HIDDEN, ROWS = 97, 16, 11  # rows per rank: 3 chunks of at most 4
TEMPERATURE, SOFTCAP = 1.5, 8.0


class Student(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
        self.proj = torch.nn.Linear(HIDDEN, HIDDEN)
        self.head = FusedLinearKL(self.embed.weight, kind="topk", temperature=TEMPERATURE, softcap=SOFTCAP,
                                  chunk_size=4)

    def hidden(self, tokens):
        return torch.tanh(self.proj(self.embed(tokens)))

    def forward(self, tokens, target, mask):
        return self.head(self.hidden(tokens), target, mask)


def global_batch(kind: str, world: int):
    """The same batch on every rank: tokens, a target of ``kind``, a mask with garbage in ignored rows."""
    g = torch.Generator().manual_seed(1234)
    n = ROWS * world
    tokens = torch.randint(0, VOCAB, (n,), generator=g)
    teacher = 3 * torch.randn(n, VOCAB, generator=g)
    target = teacher_target(teacher, kind, k=6, temperature=TEMPERATURE, generator=g)
    mask = torch.rand(n, generator=g) > 0.25
    if kind == "dense":
        target = target.masked_fill(~mask[:, None], float("nan"))
    else:
        target = (target[0].masked_fill(~mask[:, None], -100), target[1].masked_fill(~mask[:, None], float("nan")))
    return tokens, target, mask


def rows(x, lo, hi):
    return x[lo:hi] if isinstance(x, torch.Tensor) else tuple(t[lo:hi] for t in x)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--local_rank", type=int, default=0)  # passed by the deepspeed launcher
    args = p.parse_args()
    info = init_distributed()
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                                    "reduce_bucket_size": 512, "stage3_prefetch_bucket_size": 0},
              "zero_allow_untested_optimizer": True, "steps_per_print": 10**9}
    torch.manual_seed(0)
    with deepspeed.zero.Init(config_dict_or_path=config):
        student = Student()
    weight = student.embed.weight
    partitioned = weight.numel() == 0 and weight.ds_tensor.numel() < weight.ds_numel  # nothing whole anywhere
    tied = student.head.weight is student.embed.weight
    with deepspeed.zero.GatheredParameters(list(student.parameters()), modifier_rank=None):
        reference = copy.deepcopy({k: v.detach().clone() for k, v in student.state_dict().items()})
    engine, *_ = deepspeed.initialize(model=student, config=config,
                                      optimizer=torch.optim.SGD(student.parameters(), lr=0.0))

    try:  # outside the module's forward the weight is a bare partition: a direct call must refuse it
        fused_linear_kl(torch.zeros(2, HIDDEN), engine.module.embed.weight, torch.zeros(2, VOCAB), kind="dense")
        result_refused = False
    except ValueError as e:
        result_refused = "ZeRO-3 partition" in str(e)
    plain = Student()  # unsharded, same weights
    plain.load_state_dict(reference)
    result = {"world_size": info.world_size, "partitioned": bool(partitioned), "tied": bool(tied),
              "direct_call_on_partition_refused": result_refused}
    for kind in KINDS:
        tokens, target, mask = global_batch(kind, info.world_size)
        total = int(mask.sum())
        lo, hi = info.rank * ROWS, (info.rank + 1) * ROWS
        engine.module.head.kind = kind
        loss_sum, n = engine(tokens[lo:hi], rows(target, lo, hi), mask[lo:hi])
        # DeepSpeed averages gradients over ranks; this rank's share of the global mean is loss_sum / total
        engine.backward(loss_sum / total * info.world_size)
        grads = {name: safe_get_full_grad(p).detach().clone() for name, p in engine.module.named_parameters()}
        summed = all_reduce_sum(torch.stack([loss_sum.detach().double(), n.double()]))

        plain.zero_grad()
        opts = dict(kind=kind, temperature=TEMPERATURE, softcap=SOFTCAP, mask=mask)
        head_only, _ = reference_kl(plain.hidden(tokens).detach() @ plain.embed.weight.T, target, **opts)
        (head_only / total).backward()  # the output matrix's share of the tied weight's gradient
        head_part = plain.embed.weight.grad.abs().max()
        plain.zero_grad()
        ref_sum, ref_n = reference_kl(plain.hidden(tokens) @ plain.embed.weight.T, target, **opts)
        (ref_sum / total).backward()
        ref_grads = dict(plain.named_parameters())
        result[kind] = {
            "loss_sum": float(summed[0]), "ref_loss_sum": float(ref_sum.detach()), "count": int(summed[1]),
            "ref_count": int(ref_n), "head_part_of_tied_grad_max_abs": float(head_part),
            "grads": {name: {"max_abs_err": float((g - ref_grads[name].grad).abs().max()),
                             "max_abs": float(ref_grads[name].grad.abs().max()), "shape": list(g.shape)}
                      for name, g in grads.items()},
        }
        engine.step()  # lr 0: weights unchanged, gradients cleared for the next kind
    if info.is_main:
        Path(args.out).write_text(json.dumps(result, indent=1))
    shutdown()  # ranks leave together: one exiting while the other still works can abort at exit


if __name__ == "__main__":
    main()
