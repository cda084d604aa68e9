"""The output directory of a training stage: fresh, resumable, or finished.

Layout: `run_config.json` (the resolved configuration, written first), `checkpoints/` (DeepSpeed
checkpoints for resume), `metrics.jsonl`, and at the very end the Hugging Face export (config.json,
safetensors, tokenizer) followed by `summary.json`. A directory counts as finished only once
`summary.json` exists, so a crashed or killed run never looks complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from distill.errors import UserError

RUN_CONFIG = "run_config.json"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"


def _diff(saved: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def prepare(out: Path, run_config: dict, overwrite: bool) -> str:
    """Decide what to do with `out`; returns "fresh" or "resume". Call on rank 0 only.

    Refuses to touch a finished run or a directory it did not create unless `overwrite` is given,
    and refuses to resume a run whose configuration changed (naming every changed key).
    """
    run_config = json.loads(json.dumps(run_config))  # normalise tuples etc. as they read back
    saved_path = out / RUN_CONFIG
    if out.exists() and overwrite:
        if any(out.iterdir()) and not saved_path.is_file():
            raise UserError(f"--overwrite: {out} is not an UNDO run directory (no {RUN_CONFIG}); not deleting it")
        shutil.rmtree(out)
    if out.exists() and any(out.iterdir()):
        if not saved_path.is_file():
            raise UserError(f"output directory {out} exists and is not an UNDO run directory (no {RUN_CONFIG})")
        if (out / SUMMARY).is_file():
            raise UserError(f"{out} already holds a finished run ({SUMMARY} exists); pass --overwrite to redo it")
        changed = _diff(json.loads(saved_path.read_text()), run_config)
        if changed:
            raise UserError(f"{out} holds an unfinished run with a different configuration; resume with the same "
                            f"arguments or pass --overwrite. Changed: " + "; ".join(changed))
        return "resume"
    out.mkdir(parents=True, exist_ok=True)
    write_json(saved_path, run_config)
    return "fresh"


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temporary file, then rename), so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
