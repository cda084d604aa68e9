"""Peak memory of one training step at a Gemma vocabulary: the fused head against the materialised logits.

    .venv/bin/python bench/head_memory.py [--objective ce|maxent|npo|graddiff-kl] [--vocab 256000]
                                          [--tokens 2048] [--hidden 64]

Each path runs in its own process (so each peak is its own): a 1-layer Gemma-2 with the given vocabulary
and hidden size, one forward and backward on `--tokens` tokens. `ce` (pretraining, relearning): next-token
cross-entropy on 2 rows through `distill.objective.CausalLMObjective` (the model's float32 logits, tokens x
vocab) and through `distill.ce_objective.FusedCausalLMObjective` (chunked, never holding them). The
unlearning objectives (`maxent`, `npo` with its reference, `graddiff-kl`: GradDiff whose retain term is
KL to the reference) on one forget and one retain row, through `unlearn.methods.terms.TermsModel` with
and without the fused head. Reported: each process's peak resident memory over its resident memory just
before the step (the step's own peak), and the ratio fused / logits; both losses are printed to show they
agree. The last line is one JSON object.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import resource
import subprocess

OBJECTIVES = ("ce", "maxent", "npo", "graddiff-kl")


def tiny_gemma(vocab: int, hidden: int, seed: int):
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    config = Gemma2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=hidden // 2,
                          layer_types=["full_attention"])
    config._attn_implementation = "eager"
    return Gemma2ForCausalLM(config)


def setup(name: str, path: str, vocab: int, tokens: int, hidden: int):
    """(objective, module, batch) of one step."""
    import torch

    model = tiny_gemma(vocab, hidden, seed=0)
    ids = torch.randint(0, vocab, (2, tokens // 2), generator=torch.Generator().manual_seed(1))
    rows = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
    if name == "ce":
        from distill.ce_objective import FusedCausalLMObjective, with_ce_head
        from distill.objective import CausalLMObjective

        if path == "logits":
            return CausalLMObjective(), model, rows
        return FusedCausalLMObjective(), with_ce_head(model), rows
    from unlearn.methods import build_objective, get_method, parse_hparams
    from unlearn.methods.terms import TermsModel

    method = get_method(name.removesuffix("-kl"))
    hp = parse_hparams(method, ["retain_loss=kl"] if name.endswith("-kl") else [])
    reference = None
    if method.Objective.uses_reference(hp):
        reference = TermsModel(tiny_gemma(vocab, hidden, seed=1), path == "fused").requires_grad_(False)
    objective = build_objective(method, hp, reference, model.config)
    half = {k: v[:1] for k, v in rows.items()}
    batch = {"forget": half, "retain": {k: v[1:] for k, v in rows.items()}}
    return objective, TermsModel(model, path == "fused"), batch


def child(name: str, path: str, vocab: int, tokens: int, hidden: int) -> dict:
    objective, module, batch = setup(name, path, vocab, tokens, hidden)
    totals = {k: float(v) for k, v in objective.count(batch).items()}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    loss, _ = objective(module, batch, totals)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"path": path, "loss": loss.item(), "step_peak_gib": round(peak - before, 3), "peak_gib": round(peak, 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objective", default="ce", choices=OBJECTIVES)
    p.add_argument("--vocab", type=int, default=256_000)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.objective, args.child, args.vocab, args.tokens, args.hidden)))
        return
    results = {}
    for path in ("logits", "fused"):
        out = subprocess.run([sys.executable, __file__, "--child", path, "--objective", args.objective,
                              "--vocab", str(args.vocab), "--tokens",
                              str(args.tokens), "--hidden", str(args.hidden)], capture_output=True, text=True,
                             check=True)
        results[path] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{path:>6}: step peak {results[path]['step_peak_gib']:.3f} GiB over the model "
              f"(process peak {results[path]['peak_gib']:.3f} GiB), loss {results[path]['loss']:.6f}")
    logits_bytes = args.tokens * args.vocab * 4 / 2**30
    summary = {"objective": args.objective, "vocab": args.vocab, "tokens": args.tokens,
               "fp32_logits_gib": round(logits_bytes, 3),
               "logits_step_peak_gib": results["logits"]["step_peak_gib"],
               "fused_step_peak_gib": results["fused"]["step_peak_gib"],
               "fused_over_logits": round(results["fused"]["step_peak_gib"] / results["logits"]["step_peak_gib"], 4),
               "loss_difference": abs(results["fused"]["loss"] - results["logits"]["loss"])}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
