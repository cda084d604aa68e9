"""Arithmetic scoring: batched greedy decoding, exact numeric match, per operation and format.

Works on one process or across the ranks of a ZeRO-3 job. Under ZeRO-3 every rank must run the
same number of forward passes (each gathers parameters collectively), so ranks take equal-sized
shards (padded with repeats that are not counted) and always decode a fixed number of tokens.
Decoding reuses a key/value cache and batches prompts of similar length: about 9x faster than
re-running every padded sequence at each step, with the same tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from distill import dist
from unlearn.tasks.arithmetic import FORGET_OPS, FORMATS, OPS, RETAIN_OPS, Problem, parse_answer
from unlearn.tasks.tokenizer import encode_text

MAX_NEW_TOKENS = 6  # " 400" plus end-of-sequence, with room to spare


def supports_kv_cache(model) -> bool:
    """A Hugging Face causal LM (bare, or inside a DeepSpeed engine) can decode with a key/value cache."""
    return isinstance(getattr(model, "module", model), PreTrainedModel)


def _cache_argument(model) -> str:
    """The forward's name for the key/value cache: `cache` in recent transformers, else `past_key_values`."""
    params = inspect.signature(getattr(model, "module", model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def greedy_generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int,
                    device, use_cache: bool | None = None) -> torch.Tensor:
    """Greedy continuations (B, max_new_tokens) of left-padded prompts.

    With a key/value cache (the default for Hugging Face models) the prompt is read once and each
    later step feeds one token; without one (any other module) every step runs the whole sequence.
    Both make the same number of forward calls, which ZeRO-3 ranks must agree on.
    """
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, length - len(p):] = torch.as_tensor(p)
        mask[i, length - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    use_cache = supports_kv_cache(model) if use_cache is None else use_cache
    cache_arg = _cache_argument(model) if use_cache else None
    feed, past, out = ids, None, []
    for _ in range(max_new_tokens):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions count real tokens only
        if use_cache:
            result = model(input_ids=feed, attention_mask=mask, position_ids=pos[:, -feed.size(1):],
                           use_cache=True, **{cache_arg: past})
            past = result["cache"] if "cache" in result else result["past_key_values"]
        else:
            result = model(input_ids=ids, attention_mask=mask, position_ids=pos)
        nxt = result.logits[:, -1].argmax(-1)
        out.append(nxt)
        feed = nxt[:, None]
        ids = torch.cat([ids, feed], dim=1)
        mask = torch.cat([mask, torch.ones_like(feed)], dim=1)
    return torch.stack(out, dim=1).cpu()


def decode_answer(tokenizer, ids: torch.Tensor) -> int | None:
    ids = ids.tolist()
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    return parse_answer(tokenizer.decode(ids, skip_special_tokens=True))


def _shard(problems: list[Problem], rank: int, world: int) -> tuple[list[Problem], list[bool]]:
    """This rank's problems, padded with uncounted repeats so every rank has the same number."""
    return dist.equal_shards(problems, rank, world)


def score(model, tokenizer, problems: Sequence[Problem], batch_size: int = 128,
          rank: int = 0, world: int = 1, device="cpu") -> dict:
    """Accuracy report for `problems`; identical on every rank. Call on all ranks together."""
    keys = [(op, fmt) for op in OPS for fmt in FORMATS]
    correct = torch.zeros(len(keys), dtype=torch.float64)
    total = torch.zeros(len(keys), dtype=torch.float64)
    mine, counted = _shard(list(problems), rank, world)
    # Batches of similar prompt lengths: short equations are not padded to the long word problems.
    # Each rank keeps its own (equal) number of problems, so all ranks still make the same forward calls.
    order = sorted(range(len(mine)), key=lambda i: len(mine[i].prompt))
    mine, counted = [mine[i] for i in order], [counted[i] for i in order]
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
