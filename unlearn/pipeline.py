"""The end-to-end UNDO experiment as a list of stages, each one `deepspeed` job, skipped when done.

A stage is (name, script, output, arguments, upstream stages). Its key is the script, its
arguments and the fingerprints of its upstream stages' finished outputs; `<out>/pipeline.json` keeps
the key each finished stage ran with. A stage whose output is finished under the same key is skipped;
an unfinished one is started again with the same arguments, so it resumes from its own checkpoint; a
finished one whose key changed is refused unless --overwrite is given (then it is redone, and so is
everything downstream, whose upstream fingerprints change with it).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import UserError
from distill.launcher import run_stage
from distill.rundir import SUMMARY, write_json

PIPELINE = "pipeline.json"


@dataclass
class Stage:
    name: str  # e.g. "base", "unlearned:maxent", "relearn:undo:maxent:alpha=1"
    script: str
    out: Path
    args: list[str]
    upstream: list[str] = field(default_factory=list)

    @property
    def done_file(self) -> Path:
        """The file a stage writes last: only then is its output finished."""
        if self.script.endswith("precompute.py"):
            return self.out / "manifest.json"
        if self.script.endswith("relearn.py"):
            return self.out
        return self.out / SUMMARY


def fingerprint(stage: Stage) -> str:
    return hashlib.sha256(stage.done_file.read_bytes()).hexdigest()[:16]


def stage_key(stage: Stage, stages: dict[str, Stage]) -> dict:
    return {"script": stage.script, "args": stage.args,
            "upstream": {u: fingerprint(stages[u]) for u in stage.upstream}}


class Pipeline:
    def __init__(self, out: Path, stages: list[Stage], nproc: int, ds_config: str, overwrite: bool):
        self.out, self.nproc, self.ds_config, self.overwrite = Path(out), nproc, ds_config, overwrite
        self.stages = {s.name: s for s in stages}
        self.record_path = self.out / PIPELINE
        # {stage name: {"key": the key it was started with, "finished": bool}}
        self.record = json.loads(self.record_path.read_text()) if self.record_path.is_file() else {}
        self.seconds: dict[str, float | None] = {}

    def _own_settings_changed(self, s: Stage) -> bool:
        key = self.record.get(s.name, {}).get("key", {})
        return (key.get("script"), key.get("args")) != (s.script, s.args)

    def check_changed(self) -> None:
        """Before running anything: name every finished stage whose own arguments changed."""
        changed = [s for s in self.stages.values() if s.done_file.exists() and self._own_settings_changed(s)]
        if changed and not self.overwrite:
            names = ", ".join(f"{s.name} ({s.out})" for s in changed)
            raise UserError(f"finished stages were made with other settings (or not by this pipeline): {names}. "
                            "Pass --overwrite to redo them, or choose another --out")

    def run(self) -> None:
        self.check_changed()
        for stage in self.stages.values():
            self.seconds[stage.name] = self._run_stage(stage)

    def _save(self, stage: Stage, key: dict, finished: bool) -> None:
        self.record[stage.name] = {"key": key, "finished": finished}
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.record_path, self.record)

    def _run_stage(self, stage: Stage) -> float | None:
        key = stage_key(stage, self.stages)
        before = self.record.get(stage.name, {})
        if stage.done_file.exists() and before.get("key") == key:  # finished under this key
            if not before.get("finished"):  # the pipeline stopped between the stage's end and this record
                self._save(stage, key, finished=True)
            print(f"[undo] {stage.name}: finished, skipped ({stage.out})", flush=True)
            return None
        # Same key, unfinished: the stage resumes from its checkpoint. Anything else in the way (a
        # finished output, or a partial one from other settings) is replaced only with --overwrite;
        # without it the stage script refuses and names what differs.
        in_the_way = stage.out.exists() and before.get("key") != key
        if stage.done_file.exists() and not self.overwrite:
            raise UserError(f"{stage.name} ({stage.out}) was made from other upstream results; pass --overwrite "
                            "to redo it")
        print(f"[undo] {stage.name}: {'redoing' if in_the_way else 'running'} -> {stage.out}", flush=True)
        self._save(stage, key, finished=False)
        t0 = time.time()
        extra = ["--overwrite"] if in_the_way and self.overwrite else []
        run_stage(stage.script, ["--ds_config", self.ds_config, "--out", str(stage.out), *stage.args, *extra],
                  self.nproc)
        self._save(stage, key, finished=True)
        return time.time() - t0
