"""Multiple-choice accuracy in the WMDP / MMLU layout, scored the way lm-evaluation-harness scores `acc`.

A question file is json/jsonl with one object per question: {"question": str, "choices": [str, ...],
"answer": int} (the index of the right choice). The prompt is

    {question}\\nA. {choice 0}\\nB. {choice 1}\\n...\\nAnswer:

and each choice's continuation is " A", " B", ...; its log-likelihood is the sum of the continuation
tokens' log-probabilities after the prompt (the prompt and the prompt + continuation are tokenised with
the tokenizer's own special tokens, as lm-evaluation-harness 0.4.13 does: a Gemma or Llama tokenizer
leads with bos; the continuation is what the longer encoding adds). `acc` is the share of questions
whose highest-scoring choice is the answer
(the first on ties). Questions are sharded over ranks with equal forward counts (ZeRO-3) and the counts
all-reduced, so the result is the same on any world size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from distill import dist
from distill.errors import UserError

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, ...]
    answer: int

    @property
    def prompt(self) -> str:
        lines = [self.question.strip()] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(self.choices)]
        return "\n".join(lines) + "\nAnswer:"

    @property
    def continuations(self) -> list[str]:
        return [f" {LETTERS[i]}" for i in range(len(self.choices))]


def _question(obj, where: str) -> Question:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected an object with question, choices and answer")
    missing = [k for k in ("question", "choices", "answer") if k not in obj]
    if missing:
        raise UserError(f"{where}: missing {', '.join(missing)}")
    choices = obj["choices"]
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS) or not all(
            isinstance(c, str) for c in choices):
        raise UserError(f"{where}: choices must be a list of 2 to {len(LETTERS)} strings")
    answer = obj["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise UserError(f"{where}: answer {answer!r} is not an index into its {len(choices)} choices")
    if not isinstance(obj["question"], str):
        raise UserError(f"{where}: question must be a string")
    return Question(obj["question"], tuple(choices), answer)


def load_questions(path: str, flag: str = "--mcq-eval") -> list[Question]:
    """The questions of a .json (a list) or .jsonl file; UserError naming the file and line for bad input."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{flag} {path}: no such file (expected json or jsonl questions)")
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".json":
            rows = [(f"{flag} {path}: item {i}", o) for i, o in enumerate(json.loads(text))]
        else:
            rows = [(f"{flag} {path}:{n}", json.loads(line)) for n, line in enumerate(text.splitlines(), 1)
                    if line.strip()]
    except UnicodeDecodeError as e:
        raise UserError(f"{flag} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except (json.JSONDecodeError, TypeError) as e:
        raise UserError(f"{flag} {path}: not valid JSON: {e}") from e
    if not rows:
        raise UserError(f"{flag} {path}: holds no questions")
    return [_question(obj, where) for where, obj in rows]


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids): the continuation is what encoding context + continuation adds.
    Trailing spaces of the context move to the continuation, as the harness moves them."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    ctx = tokenizer(context)["input_ids"]
    return ctx, whole[len(ctx):]


@torch.no_grad()
def choice_loglikelihoods(model, tokenizer, question: Question, device) -> list[float]:
    """Sum of log-probabilities of each choice's continuation after the prompt (one batch per question)."""
    pairs = [encode_pair(tokenizer, question.prompt, c) for c in question.continuations]
    length = max(len(a) + len(b) for a, b in pairs)
    ids = torch.full((len(pairs), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (a, b) in enumerate(pairs):
        ids[i, : len(a) + len(b)] = torch.tensor(a + b)
        mask[i, : len(a) + len(b)] = 1
    logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
    scores = []
    for i, (a, b) in enumerate(pairs):
        positions = torch.arange(len(a) - 1, len(a) + len(b) - 1, device=logp.device)
        scores.append(float(logp[i, positions, torch.tensor(b, device=logp.device)].sum()))
    return scores


def mcq_accuracy(model, tokenizer, questions: list[Question], rank: int = 0, world: int = 1, device="cpu") -> dict:
    """{"acc": share answered right, "questions": count}; call on every rank together."""
    mine = zip(*dist.equal_shards(questions, rank, world))  # equal forward counts on every rank
    counts = torch.zeros(2, dtype=torch.float64)
    was_training = model.training
    model.eval()
    for q, counted in mine:
        scores = choice_loglikelihoods(model, tokenizer, q, device)
        if counted:
            counts[0] += float(max(range(len(scores)), key=lambda k: scores[k]) == q.answer)
            counts[1] += 1
    model.train(was_training)
    dist.all_reduce_sum(counts)
    right, n = counts.tolist()
    return {"acc": right / n if n else None, "questions": int(n)}
