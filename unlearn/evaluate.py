"""Arithmetic scoring: batched greedy decoding, exact numeric match, per operation and format.

Works on one process or across the ranks of a ZeRO-3 job. Under ZeRO-3 every rank must run the
same number of forward passes (each gathers parameters collectively), so ranks take equal-sized
shards (padded with repeats that are not counted) and always decode a fixed number of tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from distill import dist
from unlearn.tasks.arithmetic import FORGET_OPS, FORMATS, OPS, RETAIN_OPS, Problem, parse_answer
from unlearn.tasks.tokenizer import encode_text

MAX_NEW_TOKENS = 6  # " 400" plus end-of-sequence, with room to spare


@torch.no_grad()
def greedy_generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int,
                    device) -> torch.Tensor:
    """Greedy continuations (B, max_new_tokens) of left-padded prompts; full forward each step, no cache."""
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, length - len(p):] = torch.as_tensor(p)
        mask[i, length - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    out = []
    for _ in range(max_new_tokens):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        nxt = logits.argmax(-1)
        out.append(nxt)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], dim=1)
    return torch.stack(out, dim=1).cpu()


def decode_answer(tokenizer, ids: torch.Tensor) -> int | None:
    ids = ids.tolist()
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    return parse_answer(tokenizer.decode(ids, skip_special_tokens=True))


def _shard(problems: list[Problem], rank: int, world: int) -> tuple[list[Problem], list[bool]]:
    """This rank's problems, padded with uncounted repeats so every rank has the same number."""
    per_rank = -(-len(problems) // world)
    mine = problems[rank::world]
    counted = [True] * len(mine)
    while len(mine) < per_rank:
        mine.append(problems[0])
        counted.append(False)
    return mine, counted


def score(model, tokenizer, problems: Sequence[Problem], batch_size: int = 128,
          rank: int = 0, world: int = 1, device="cpu") -> dict:
    """Accuracy report for `problems`; identical on every rank. Call on all ranks together."""
    keys = [(op, fmt) for op in OPS for fmt in FORMATS]
    correct = torch.zeros(len(keys), dtype=torch.float64)
    total = torch.zeros(len(keys), dtype=torch.float64)
    mine, counted = _shard(list(problems), rank, world)
    was_training = model.training
    model.eval()
    for start in range(0, len(mine), batch_size):
        chunk = mine[start:start + batch_size]
        prompts = [[tokenizer.bos_token_id] + encode_text(tokenizer, p.prompt) for p in chunk]
        gen = greedy_generate(model, prompts, MAX_NEW_TOKENS, tokenizer.pad_token_id, device)
        for p, row, use in zip(chunk, gen, counted[start:start + batch_size]):
            if use:
                k = keys.index((p.op, p.format))
                total[k] += 1
                correct[k] += float(decode_answer(tokenizer, row) == p.answer)
    model.train(was_training)
    dist.all_reduce_sum(correct)
    dist.all_reduce_sum(total)
    return report(dict(zip(keys, correct.tolist())), dict(zip(keys, total.tolist())))


def _ratio(c: float, n: float) -> float | None:
    return c / n if n else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def report(correct: dict, total: dict) -> dict:
    """Per-op accuracy (both formats), per format, and the retain/forget means over ops present."""
    ops = [op for op in OPS if any(total.get((op, f), 0) for f in FORMATS)]
    acc = {op: _ratio(sum(correct.get((op, f), 0) for f in FORMATS), sum(total.get((op, f), 0) for f in FORMATS))
           for op in ops}
    by_format = {fmt: {op: _ratio(correct.get((op, fmt), 0), total.get((op, fmt), 0)) for op in ops
                       if total.get((op, fmt), 0)} for fmt in FORMATS}
    return {
        "accuracy": acc,
        "equation_accuracy": by_format["equation"],
        "word_accuracy": by_format["word"],
        "retain_accuracy": _mean(acc.get(op) for op in RETAIN_OPS),
        "forget_accuracy": _mean(acc.get(op) for op in FORGET_OPS),
        "counts": {f"{op} {fmt}": int(total[(op, fmt)]) for op in ops for fmt in FORMATS if total.get((op, fmt))},
    }
