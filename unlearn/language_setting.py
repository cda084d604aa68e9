"""The language setting of `launch/undo.py --setting language`: English kept, Korean forgotten.

The paper's second synthetic setting at a scale a 2-core machine can run: a small Gemma-2 (the
`gemma2-tiny` preset) with a byte-level BPE of VOCAB ids trained on the training text, pretrained on the
English + Korean mix (base) and on English alone (gold, the data-filtering standard); the capability is
per-token cross-entropy on held-out pages (Korean: forget, English: retain; lower = more capable).
Every stage is the `--task text` command a user would run; this module only says which files and budgets.

The data directory holds the files `unlearn.language_data` writes (FILES): by default OUT/data, fetched
and cleaned when missing; `--language-data DIR` points at another (the tests write a tiny one).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from distill.errors import UserError

FILES = ("english-train", "english-eval", "korean-train", "korean-eval", "korean-attack", "mix-train")
VOCAB = 4096  # subword ids: Gemma's 262k would make every step of a small model mostly output matrix
MODEL = "gemma2-tiny"
ATTACK_EVAL = "held-out Korean pages (cross-entropy)"
# Students read the teacher's full distribution online, not a top-k cache. This teacher is flat (English
# CE ~4.2 nats over 4,096 ids): its top 64 ids hold 66% of its probability on average and miss the actual
# next token 25% of the time (top 256: 82% and 10%), and a student learns only the tail's total, not which
# tokens hold it. Measured on the same teacher, alpha 1, rows of 16: English CE at step 250 was 4.77 from
# the top-64 cache, 4.55 from a top-256 one and 4.46 online, the criterion (4.456) met online at step 275;
# from the top-64 cache the student plateaued above it (4.463 after 800 steps). A 1.5M-parameter teacher's
# forward costs less than writing and reading its cache; at Gemma scale the cache is the way, with a k
# that `launch/precompute.py` reports as keeping enough of the probability.
ONLINE = True

# Budgets. Full: the settings the README's language results come from, sized for the 40-minute target on
# 2 cores. Pretraining and the students take rows of 16 (half the cost of a step at 32); the students
# stop at the criterion, so 500 steps is a cap (the oracle students, which do not stop, train all of it).
# Unlearning and the attack keep rows of 32 (an attacker is not made weaker to save time); 1e-4 never
# gave the strongest attack in the first full run, so the grid is 3e-4 and 1e-3. Unlearning takes the
# paper's 100 steps (at UNLEARN_LR below). At MaxEnt's default LR (3e-4) and 40 steps its teacher (Korean CE
# 8.227; uniform over 4,096 ids is 8.318) gave alpha-1 students that closed 0.593 / 0.562 / 0.597 of the
# gap on seeds 0-2 (target 0.6); at 100 steps (8.269, English 4.106) 0.658 / 0.581 / 0.620. The students
# keep their LR (experiment.student_lr): the paper's 9e-4 -> 7e-4 gave 0.584 / 0.567 on seeds 0 / 1 at 100
# unlearning steps. mix-train interleaves pages (23% Korean tokens); the paper's 50/50 token mix, run on
# seed 1 from scratch, gave 0.588 (0.581).
# A method's constant unlearning LR in this setting, where it differs from the method's default (picked, as
# the paper picks each method's, by trying more than one): MaxEnt at 1e-3 rather than 3e-4 leaves a teacher
# flatter on Korean (seed 1: CE 8.310 against 8.269) and better at English (3.931 against 4.106 for base's
# 4.305), and its alpha-1 student closed 0.694 of the gap on seed 1 against 0.581 (the README has all
# three seeds). The other methods were not tuned here and keep their defaults.
UNLEARN_LR = {"maxent": "1e-3"}
# "common" goes to every stage that evaluates; the cache stage (when not ONLINE) takes the row length alone.
FULL_SEQ, QUICK_SEQ = ["--seq-len", "128"], ["--seq-len", "32"]
SMALL_ROWS = ["--global-batch", "16", "--micro-batch", "8"]
FULL = {
    "seq_len": FULL_SEQ,
    "common": [*FULL_SEQ, "--eval-docs", "256", "--eval-batch", "16"],
    "pretrain": ["--steps", "600", *SMALL_ROWS, "--eval-every", "0", "--save-every", "200"],
    "unlearn": ["--steps", "100", "--global-batch", "32", "--micro-batch", "16", "--eval-every", "0"],
    "precompute": [],
    "distill": ["--steps", "500", *SMALL_ROWS, "--eval-every", "25", "--save-every", "100"],
    "relearn": ["--lrs", "3e-4,1e-3", "--steps", "40", "--eval-every", "10"],
}
QUICK = {
    "seq_len": QUICK_SEQ,
    "common": [*QUICK_SEQ, "--eval-docs", "8", "--eval-batch", "4"],
    "pretrain": ["--steps", "20", "--global-batch", "8", "--micro-batch", "4", "--eval-every", "0",
                 "--save-every", "10"],
    "unlearn": ["--steps", "3", "--global-batch", "8", "--micro-batch", "4", "--eval-every", "0"],
    "precompute": ["--records-per-shard", "16"],  # shards for both ranks
    "distill": ["--steps", "6", "--global-batch", "8", "--micro-batch", "4", "--eval-every", "3",
                "--save-every", "3"],
    "relearn": ["--lrs", "1e-3", "--steps", "4", "--eval-every", "2", "--global-batch", "8",
                "--micro-batch", "4"],
}


def data_files(data: Path) -> dict[str, Path]:
    """{name: path} of the setting's corpora in `data`; a missing or empty file stops the run, named."""
    files = {name: Path(data) / f"{name}.jsonl" for name in FILES}
    for path in files.values():
        if not path.is_file() or path.stat().st_size == 0:
            raise UserError(f"--language-data {data}: {path.name} is missing or empty; expected the files "
                            f"{', '.join(f + '.jsonl' for f in FILES)} (python -m unlearn.language_data --out DIR)")
    return files


def prepare(out: Path, data: Path | None, vocab: int = VOCAB) -> tuple[Path, Path]:
    """(data directory, tokenizer directory): the corpora fetched into OUT/data when `data` is None, and the
    tokenizer trained on mix-train into OUT/tokenizer. Both are reused when finished; a tokenizer trained on
    other text or at another size is refused rather than silently replaced."""
    if data is None:
        from unlearn.language_data import prepare as fetch_corpora

        data = Path(out) / "data"
        print(f"[undo] language corpora -> {data} (fetched and cleaned once)", flush=True)
        fetch_corpora(data)
    files = data_files(Path(data))
    mix = files["mix-train"]
    stamp = {"trained_on": str(mix.resolve()), "sha256": hashlib.sha256(mix.read_bytes()).hexdigest(), "vocab": vocab}
    tok = Path(out) / "tokenizer"
    record = tok / "undo_tokenizer.json"
    if record.is_file():
        if json.loads(record.read_text()) != stamp:
            raise UserError(f"{tok} was trained on other text or at another size than {mix} at {vocab} ids; "
                            "delete it (and the models trained with it) to start over")
        return Path(data), tok
    from unlearn.subword import train_tokenizer

    texts = [json.loads(line)["text"] for line in mix.read_text(encoding="utf-8").splitlines() if line.strip()]
    print(f"[undo] training a {vocab}-id BPE on {mix.name} ({len(texts)} documents) -> {tok}", flush=True)
    train_tokenizer(texts, tok, vocab)
    record.write_text(json.dumps(stamp, indent=1) + "\n")  # last: a half-written tokenizer is trained again
    return Path(data), tok


def task_flags(kind: str, data: Path, quick: bool) -> list[str]:
    """The --task text flags of a stage kind (pretrain flags come from `pretrain_flags`)."""
    f = {name: str(p) for name, p in data_files(data).items()}
    budget = QUICK if quick else FULL
    common, evals = ["--task", "text", *budget["common"]], _held_out(f)
    return {
        "unlearn": [*common, "--forget-data", f["korean-train"], "--retain-data", f["english-train"], *evals],
        "precompute": ["--task", "text", *budget["seq_len"], "--data", f["mix-train"]],
        "distill": [*common, "--data", f["mix-train"], *evals],
        "relearn": [*common, "--forget-data", f["korean-attack"], "--forget-eval", f["korean-eval"]],
    }[kind]


def unlearn_flags(method: str) -> list[str]:
    """The flags `method`'s unlearning stage takes in this setting beyond the budget: its LR (UNLEARN_LR)."""
    return ["--lr", UNLEARN_LR[method]] if method in UNLEARN_LR else []


def pretrain_flags(gold: bool, data: Path, tokenizer: Path, quick: bool) -> list[str]:
    """Base pretrains on the English + Korean mix, gold on English only: data filtering."""
    f = {name: str(p) for name, p in data_files(data).items()}
    return ["--model", MODEL, "--tokenizer", str(tokenizer), "--task", "text", *(QUICK if quick else FULL)["common"],
            "--data", f["english-train"] if gold else f["mix-train"], *_held_out(f)]


def _held_out(f: dict[str, str]) -> list[str]:
    """The evaluation pages every evaluating stage scores: Korean (forget) and English (retain)."""
    return ["--forget-eval", f["korean-eval"], "--retain-eval", f["english-eval"]]
