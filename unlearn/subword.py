"""A byte-level BPE tokenizer trained on a task's own corpora (`tokenizers`), saved as a Hugging Face
tokenizer directory that every stage loads with AutoTokenizer.

Used where no model brings a tokenizer: the language setting trains one on its English and Korean
training text (a 262k-token vocabulary, Gemma's, would make a small model's every step mostly output
matrix). Special tokens <pad>, <bos>, <eos>, <unk> take ids 0-3; training is deterministic for the same
texts in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def train_tokenizer(texts: Iterable[str], out: Path, vocab_size: int, pad: bool = True) -> Path:
    """Train on `texts` and save to `out` (a directory); `pad=False` leaves the pad token out."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS if pad else SPECIALS[1:]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                                   pad_token="<pad>" if pad else None)
    fast.save_pretrained(out)
    return Path(out)
