"""Estimate per-GPU memory and the largest micro-batch of a ZeRO-3 run, without a GPU or any download.

    python launch/estimate.py --preset gemma2-9b --nodes 2 --gpus-per-node 8
    python launch/estimate.py --preset gemma2-2b --nodes 1 --gpus-per-node 8 --gpu-mem-gb 40 --seq-len 2048

Prints a table, then one line of JSON with every figure (bytes). The model is built on the meta device
(shapes only); model states come from DeepSpeed's own ZeRO-3 estimator, activations from tracing one
layer's forward. See distill/estimate.py for the formulas and what they leave out.
"""

import os
import sys
from pathlib import Path

# `python launch/estimate.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Nothing here runs on an accelerator: spare DeepSpeed its detection (and its warning) on GPU-less machines.
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import json

from distill.cli import Parser, run_main
from distill.estimate import check_args, estimate, format_table, profile
from distill.models import PRESETS


def parse_args(argv=None):
    p = Parser(description=__doc__)
    p.add_argument("--preset", required=True, help=f"model preset: {', '.join(PRESETS)}")
    p.add_argument("--nodes", type=int, required=True, help="number of nodes")
    p.add_argument("--gpus-per-node", type=int, required=True, help="GPUs per node")
    p.add_argument("--gpu-mem-gb", type=float, default=80.0, help="memory of one GPU in GiB (2^30 bytes)")
    p.add_argument("--seq-len", type=int, default=4096, help="tokens per training sequence")
    p.add_argument("--topk", type=int, default=64, help="top-k entries per token in the teacher-logit cache")
    return p.parse_args(argv)


def tokenizer_for(preset: str):
    """The testbed's tokenizer for a preset that takes its vocabulary from it (gemma2-tiny), else none."""
    if PRESETS.get(preset, {}).get("vocab_size", 0) is not None:
        return None
    from unlearn.tasks.tokenizer import build_char_tokenizer

    return build_char_tokenizer()


def main():
    args = parse_args()
    tok = tokenizer_for(args.preset)
    check_args(args.preset, args.nodes, args.gpus_per_node, args.gpu_mem_gb, args.seq_len, args.topk, tok)
    figures = estimate(profile(args.preset, args.seq_len, tok), args.nodes, args.gpus_per_node, args.gpu_mem_gb,
                       args.topk)
    print(format_table(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    run_main(main)
