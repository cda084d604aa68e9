"""JSONL metrics on rank 0: one object per line, fixed key names, the values actually optimised.

When the DeepSpeed config enables a monitor (TensorBoard, Weights & Biases, CSV, Comet), every
numeric value also goes there as (name, value, step) under the same name ("loss/kd", "eval/...").
A monitor only appends: after a resume it may hold the steps a killed attempt logged past its last
checkpoint twice (metrics.jsonl drops them)."""

from __future__ import annotations

import json
import math
from pathlib import Path


class MetricsLog:
    def __init__(self, path: Path, enabled: bool, monitor=None):
        self.path = path
        self.enabled = enabled
        self.monitor = monitor  # a DeepSpeed MonitorMaster with a monitor enabled, or None

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (left by a killed run) so a resumed run does not log them twice."""
        if not self.enabled or not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean, sort_keys=True) + "\n")
        if self.monitor is not None and "step" in record:
            self.monitor.write_events([(k, float(v), int(record["step"])) for k, v in clean.items()
                                       if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)])


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def total(path: Path, key: str) -> float:
    """Sum of `key` over the records that have it (e.g. tokens over every logged step)."""
    return float(sum(r[key] for r in read_metrics(path) if key in r))
