"""Score a model (one process): on the arithmetic testbed's held-out problems (greedy decoding, exact match),
or with --task text on held-out forget / retain text (cross-entropy in nats per token, top-1 accuracy).

    python launch/evaluate.py --model runs/base --out runs/base/eval.json
    python launch/evaluate.py --task text --model MODEL_DIR --forget-eval f.jsonl --retain-eval r.jsonl --out e.json

Arithmetic writes {"accuracy": {op: a}, "equation_accuracy": {...}, "word_accuracy": {...},
"retain_accuracy": mean(+, -), "forget_accuracy": mean(*, /), "counts": {...}}; text writes
{"forget_ce", "forget_top1", "forget_tokens", "retain_ce", "retain_top1", "retain_tokens"}.
"""

import sys
from pathlib import Path

# `python launch/evaluate.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json

import torch

from distill.cli import Parser, run_main
from distill.dist import DistInfo
from distill.errors import UserError
from distill.models import check_tokenizer_matches, has_weights, model_config
from unlearn.tasks import add_task_args


def device(text: str) -> str:
    """argparse type: a device torch knows and this machine has."""
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (expected cpu, cuda, cuda:N, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA device")
    return text


def parse_args(argv=None):
    p = Parser(description=__doc__)
    p.add_argument("--model", required=True, help="Hugging Face model directory (with its tokenizer)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    task = add_task_args(p, "evaluate", argv)
    args = p.parse_args(argv)
    return args, task(args, "evaluate")


def load(model_dir: str, device: str):
    from transformers import AutoModelForCausalLM

    if not has_weights(model_dir):
        model_config(model_dir, None)  # names a missing directory or config.json precisely
        raise UserError(f"model directory {model_dir} has no safetensors weights (model.safetensors)")
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False,
                                                 attn_implementation="eager", dtype=torch.float32)
    return model.to(device).eval()


def main():
    args, task = parse_args()
    tokenizer = task.tokenizer(args.model)
    check_tokenizer_matches(args.model, tokenizer)
    model = load(args.model, args.device)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device(args.device))
    result = task.evaluation(tokenizer, "final", info)(model)
    result["model"] = str(args.model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k in ("accuracy", task.retain_metric, task.forget_metric)}))


if __name__ == "__main__":
    run_main(main)
