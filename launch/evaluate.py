"""Score a model on the arithmetic testbed's held-out problems (greedy decoding, exact match).

    python launch/evaluate.py --model runs/base --out runs/base/eval.json

Writes {"accuracy": {op: a}, "equation_accuracy": {...}, "word_accuracy": {...},
"retain_accuracy": mean(+, -), "forget_accuracy": mean(*, /), "counts": {...}}.
"""

import sys
from pathlib import Path

# `python launch/evaluate.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json

import torch

from distill.cli import run_main
from distill.errors import UserError
from distill.models import has_weights, model_config
from unlearn.evaluate import score
from unlearn.tasks.arithmetic import OPS, eval_problems, parse_ops


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face model directory (with its tokenizer)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--ops", default=None, help="operations to score, e.g. '*,/' (default: all four)")
    p.add_argument("--per-format", type=int, default=100, help="problems per operation and format")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def load(model_dir: str, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not has_weights(model_dir):
        model_config(model_dir, None)  # names a missing directory or config.json precisely
        raise UserError(f"model directory {model_dir} has no safetensors weights (model.safetensors)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False,
                                                 attn_implementation="eager", dtype=torch.float32)
    return model.to(device).eval(), tokenizer


def main():
    args = parse_args()
    try:
        ops = parse_ops(args.ops) if args.ops else OPS
    except ValueError as e:
        raise UserError(f"--ops: {e}") from e
    model, tokenizer = load(args.model, args.device)
    result = score(model, tokenizer, eval_problems(ops, args.per_format), batch_size=args.batch_size,
                   device=args.device)
    result["model"] = str(args.model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("accuracy", "retain_accuracy", "forget_accuracy")}))


if __name__ == "__main__":
    run_main(main)
