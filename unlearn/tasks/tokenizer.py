"""Character-level tokenizer for the synthetic arithmetic task.

Built locally with the ``tokenizers`` library (nothing is downloaded) and
wrapped as a ``transformers.PreTrainedTokenizerFast`` so that it saves and
loads in Hugging Face format (``save_pretrained`` / ``AutoTokenizer``).

Vocabulary: ``<pad>``=0, ``<bos>``=1, ``<eos>``=2, ``<unk>``=3, then one token
per character of ``CHARS`` in that order. The tokenizer never adds special
tokens itself; callers add ``<bos>``/``<eos>`` explicitly.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

# Order matters: it fixes the token ids, which trained checkpoints depend on.
CHARS = string.digits + " " + string.ascii_lowercase + string.ascii_uppercase + ".,?'-:+*/="


def char_vocab() -> dict[str, int]:
    """Token -> id for the special tokens followed by every character of CHARS."""
    return {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(CHARS))}


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Build the character tokenizer (vocab size ``4 + len(CHARS)``).

    ``decode(encode(s)) == s`` exactly for any string over CHARS, spaces included.
    """
    backend = Tokenizer(models.WordLevel(vocab=char_vocab(), unk_token=UNK_TOKEN))
    # "[\s\S]" matches any single character (including newlines), so every
    # character becomes its own piece; whitespace is kept, not stripped.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # Fuse concatenates pieces with nothing in between (no spaces inserted).
    backend.decoder = decoders.Fuse()
    # No post-processor: add_special_tokens=True has nothing to add.
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="right",
        # The default cleanup would turn " ." into "." and break exact round trips.
        clean_up_tokenization_spaces=False,
    )


def char_to_id_map(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """Single-character tokens of ``tokenizer``'s vocabulary -> id (special tokens excluded)."""
    return {tok: i for tok, i in tokenizer.get_vocab().items() if len(tok) == 1}


def encode_chars(char_ids: dict[str, int], text: str) -> list[int]:
    """Map each character of ``text`` through ``char_ids``; ValueError on unknown characters."""
    try:
        return [char_ids[c] for c in text]
    except KeyError:
        bad = sorted({c for c in text if c not in char_ids})
        raise ValueError(
            f"characters not in the tokenizer vocabulary: {', '.join(map(repr, bad))} in text {text!r}"
        ) from None


def encode_text(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    """Token ids (length ``len(text)``) for ``text``, with no special tokens added.

    Raises ValueError naming the offending character(s) instead of silently
    mapping them to ``<unk>``, since an ``<unk>`` in training data is a bug.
    """
    return encode_chars(char_to_id_map(tokenizer), text)
