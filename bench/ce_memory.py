"""Peak memory of one cross-entropy training step at a Gemma vocabulary: the fused head against the logits.

    .venv/bin/python bench/ce_memory.py [--vocab 256000] [--tokens 2048] [--hidden 64]

Each path runs in its own process (so each peak is its own): a 1-layer Gemma-2 with the given vocabulary
and hidden size, one forward and backward of next-token cross-entropy on `--tokens` tokens (2 rows),
through `distill.objective.CausalLMObjective` (the model's float32 logits, (tokens x vocab)) and through
`distill.ce_objective.FusedCausalLMObjective` (chunked, never holding them). Reported: each process's peak
resident memory over its resident memory just before the step (the step's own peak), and the ratio
fused / logits; both losses are printed to show they agree. The last line is one JSON object.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import resource
import subprocess


def child(path: str, vocab: int, tokens: int, hidden: int) -> dict:
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from distill.ce_objective import FusedCausalLMObjective, with_ce_head
    from distill.objective import CausalLMObjective

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=hidden // 2,
                          layer_types=["full_attention"])
    config._attn_implementation = "eager"
    model = Gemma2ForCausalLM(config)
    ids = torch.randint(0, vocab, (2, tokens // 2))
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
    objective = CausalLMObjective() if path == "logits" else FusedCausalLMObjective()
    module = model if path == "logits" else with_ce_head(model)
    totals = objective.count(batch)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    loss, _ = objective(module, batch, totals)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"path": path, "loss": loss.item(), "step_peak_gib": round(peak - before, 3), "peak_gib": round(peak, 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=256_000)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.vocab, args.tokens, args.hidden)))
        return
    results = {}
    for path in ("logits", "fused"):
        out = subprocess.run([sys.executable, __file__, "--child", path, "--vocab", str(args.vocab), "--tokens",
                              str(args.tokens), "--hidden", str(args.hidden)], capture_output=True, text=True,
                             check=True)
        results[path] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{path:>6}: step peak {results[path]['step_peak_gib']:.3f} GiB over the model "
              f"(process peak {results[path]['peak_gib']:.3f} GiB), loss {results[path]['loss']:.6f}")
    logits_bytes = args.tokens * args.vocab * 4 / 2**30
    summary = {"vocab": args.vocab, "tokens": args.tokens, "fp32_logits_gib": round(logits_bytes, 3),
               "logits_step_peak_gib": results["logits"]["step_peak_gib"],
               "fused_step_peak_gib": results["fused"]["step_peak_gib"],
               "fused_over_logits": round(results["fused"]["step_peak_gib"] / results["logits"]["step_peak_gib"], 4),
               "loss_difference": abs(results["fused"]["loss"] - results["logits"]["loss"])}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
