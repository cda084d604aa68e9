"""The end-to-end UNDO experiment as a list of stages, each one `deepspeed` job, skipped when done.

A stage is (name, script, output, arguments, upstream stages, recipe). Its key is the script, its
arguments, its recipe (the defaults the script applies that its arguments do not show, such as an
unlearning method's settings) and the fingerprints of its upstream stages' finished outputs;
`<out>/pipeline.json` keeps the key each finished stage ran with. A stage whose output is finished under
the same key is skipped; an unfinished one is started again with the same arguments, so it resumes from
its own checkpoint; a finished one whose key changed is refused unless --overwrite is given (then it is
redone, and so is everything downstream, whose upstream fingerprints change with it). One pipeline at a
time runs in a directory (`<out>/pipeline.lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import UserError
from distill.launcher import run_stage
from distill.rundir import SUMMARY, write_json

PIPELINE = "pipeline.json"
LOCK = "pipeline.lock"
BAR = re.compile(r"\|[\u2588-\u258f ]*\|")  # a progress bar's drawing, left out of progress lines


@dataclass
class Stage:
    name: str  # e.g. "base", "unlearned:maxent", "relearn:undo:maxent:alpha=1"
    script: str
    out: Path
    args: list[str]
    upstream: list[str] = field(default_factory=list)
    # Defaults the script takes that `args` leave unsaid: part of the key, so that a changed default
    # redoes the stage rather than reusing what the old one made. Held as JSON reads it back (tuples as
    # lists), so that it compares equal to the key recorded in pipeline.json.
    recipe: dict = field(default_factory=dict)

    def __post_init__(self):
        self.recipe = json.loads(json.dumps(self.recipe))

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


def own_settings(stage: Stage) -> dict:
    """The part of a stage's key that is its own (not its inputs'): script, arguments and recipe."""
    recipe = {"recipe": stage.recipe} if stage.recipe else {}  # absent when empty: older keys stay valid
    return {"script": stage.script, "args": stage.args, **recipe}


def stage_key(stage: Stage, stages: dict[str, Stage]) -> dict:
    return {**own_settings(stage), "upstream": {u: fingerprint(stages[u]) for u in stage.upstream}}


class Pipeline:
    """Runs the stages in dependency order, up to `jobs` at once (each a `deepspeed` job of `nproc` ranks).

    With one job a stage's output streams to the terminal; with several, each stage writes
    OUT/logs/<stage>.log and the terminal gets a line per start and finish and a progress line a minute.
    """

    def __init__(self, out: Path, stages: list[Stage], nproc: int, ds_config: str, overwrite: bool, jobs: int = 1,
                 heartbeat_s: float = 60.0):
        if jobs < 1:
            raise UserError(f"--jobs must be >= 1, got {jobs}")
        self.out, self.nproc, self.ds_config, self.overwrite = Path(out), nproc, ds_config, overwrite
        self.jobs, self.heartbeat_s = jobs, heartbeat_s
        self.stages = {s.name: s for s in stages}
        self.record_path = self.out / PIPELINE
        # {stage name: {"key": the key it was started with, "finished": bool, "seconds": its wall time}}
        self.record = json.loads(self.record_path.read_text()) if self.record_path.is_file() else {}
        # Each stage's own wall time: measured now, or, for a stage skipped as finished, recorded when it
        # ran (None when the record has none); `reused` names the skipped ones.
        self.seconds: dict[str, float | None] = {}
        self.reused: list[str] = []

    def _own_settings_changed(self, s: Stage) -> bool:
        key = self.record.get(s.name, {}).get("key", {})
        return {k: v for k, v in key.items() if k != "upstream"} != own_settings(s)

    def check_changed(self) -> None:
        """Before running anything: name every finished stage whose own arguments or recipe changed."""
        changed = [s for s in self.stages.values() if s.done_file.exists() and self._own_settings_changed(s)]
        if changed and not self.overwrite:
            names = ", ".join(f"{s.name} ({s.out})" for s in changed)
            raise UserError(f"finished stages were made with other settings (or not by this pipeline): {names}. "
                            "Pass --overwrite to redo them, or choose another --out")

    def log_path(self, stage: Stage) -> Path | None:
        # relearn:undo:m:alpha=1 -> relearn-undo-m-alpha1
        name = re.sub(r"[^A-Za-z0-9.]+", "-", stage.name.replace("=", ""))
        return self.out / "logs" / f"{name}.log" if self.jobs > 1 else None

    def downstream(self, name: str) -> set[str]:
        """Every stage that needs `name`'s output, directly or not."""
        direct = {s.name for s in self.stages.values() if name in s.upstream}
        return direct.union(*(self.downstream(d) for d in direct))

    def run(self) -> None:
        with self._exclusive():
            self._run()

    @contextlib.contextmanager
    def _exclusive(self):
        """Hold OUT/pipeline.lock while running: a second pipeline on the same directory would start the
        same unfinished stages again beside the first, two jobs writing one output. The lock is the
        kernel's (flock), so a killed pipeline leaves none behind."""
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / LOCK, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                raise UserError(f"{self.out}: another pipeline is running in it (pid {holder}); wait for it to "
                                "end, or choose another --out") from None
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield

    def _run(self) -> None:
        self.check_changed()
        pending, running = list(self.stages.values()), {}  # running: {name: (stage, key, start time)}
        finished: queue.Queue = queue.Queue()
        failures: list[BaseException] = []
        # Stages that others wait for go first (unlearning before an attack on the base model).
        pending.sort(key=lambda st: -len(self.downstream(st.name)))
        t0 = time.time()
        while pending or running:
            if not failures:
                try:
                    self._start_ready(pending, running, finished)
                except UserError as e:  # a stage refused before its start: let the running ones finish
                    failures.append(e)
                    print(f"[undo] {e}", flush=True)
            if not running:
                if pending and not failures:  # cannot happen with upstream names that exist
                    raise UserError(f"stages wait on unknown upstream stages: {[s.name for s in pending]}")
                break
            try:
                name, error = finished.get(timeout=self.heartbeat_s)
            except queue.Empty:
                self._progress(running, t0)
                continue
            stage, key, started = running.pop(name)
            if error is None:
                self.seconds[name] = time.time() - started
                self._save(stage, key, finished=True, seconds=self.seconds[name])
                print(f"[undo] {name}: finished in {self.seconds[name]:.0f} s", flush=True)
            else:
                failures.append(error)
                self._report_failure(stage, error, running)
        if failures:
            raise failures[0]

    def _start_ready(self, pending: list, running: dict, finished: queue.Queue) -> None:
        """Start (or skip) pending stages whose upstream stages are finished, while job slots are free."""
        progress = True
        while progress and len(running) < self.jobs:
            progress = False
            for stage in pending:
                if any(u in running or any(p.name == u for p in pending) for u in stage.upstream):
                    continue
                pending.remove(stage)
                begun = self._begin(stage)
                if begun is not None:
                    key, in_the_way = begun
                    running[stage.name] = (stage, key, time.time())
                    threading.Thread(target=self._work, args=(stage, in_the_way, finished), daemon=True).start()
                progress = True
                break

    def _begin(self, stage: Stage) -> tuple[dict, bool] | None:
        """Skip a stage finished under its key (None), else record it as started and return its key and
        whether an output from other settings is in the way (to be replaced: --overwrite)."""
        key = stage_key(stage, self.stages)
        before = self.record.get(stage.name, {})
        if stage.done_file.exists() and before.get("key") == key:  # finished under this key
            if not before.get("finished"):  # the pipeline stopped between the stage's end and this record
                self._save(stage, key, finished=True)
            print(f"[undo] {stage.name}: finished, skipped ({stage.out})", flush=True)
            self.seconds[stage.name] = self.record[stage.name].get("seconds")
            self.reused.append(stage.name)
            return None
        # Same key, unfinished: the stage resumes from its checkpoint. Anything else in the way (a
        # finished output, or a partial one from other settings) is replaced only with --overwrite;
        # without it the stage script refuses and names what differs.
        if stage.done_file.exists() and not self.overwrite:
            raise UserError(f"{stage.name} ({stage.out}) was made from other upstream results; pass --overwrite "
                            "to redo it")
        in_the_way = stage.out.exists() and before.get("key") != key
        log = self.log_path(stage)
        print(f"[undo] {stage.name}: {'redoing' if in_the_way else 'running'} -> {stage.out}"
              + (f" (log: {log})" if log else ""), flush=True)
        self._save(stage, key, finished=False)
        return key, in_the_way

    def _work(self, stage: Stage, in_the_way: bool, finished: queue.Queue) -> None:
        """A worker thread: run the stage's job to its end and report (name, None or the exception)."""
        extra = ["--overwrite"] if in_the_way and self.overwrite else []
        args = ["--ds_config", self.ds_config, "--out", str(stage.out), *stage.args, *extra]
        try:
            run_stage(stage.script, args, self.nproc, log=self.log_path(stage))
            finished.put((stage.name, None))
        except BaseException as e:  # noqa: BLE001 -- handed to the main thread, which raises it
            finished.put((stage.name, e))

    def _report_failure(self, stage: Stage, error: BaseException, running: dict) -> None:
        log = self.log_path(stage)
        print(f"[undo] {stage.name}: FAILED: {error}", flush=True)
        if log is not None and log.is_file():
            print(f"[undo] last lines of {log}:\n" + "\n".join(last_lines(log, 25)), flush=True)
        if running:
            print(f"[undo] starting nothing new; waiting for {', '.join(running)} to finish", flush=True)

    def _progress(self, running: dict, t0: float) -> None:
        if self.jobs == 1:
            return  # the running stage's own output is on the terminal
        parts = [f"{name} ({BAR.sub('', (last_lines(self.log_path(stage), 1) or ['starting'])[-1])[:70]})"
                 for name, (stage, _, _) in running.items()]
        print(f"[undo] {(time.time() - t0) / 60:.0f} min: " + "; ".join(parts), flush=True)

    def _save(self, stage: Stage, key: dict, finished: bool, seconds: float | None = None) -> None:
        self.record[stage.name] = {"key": key, "finished": finished,
                                   **({"seconds": seconds} if seconds is not None else {})}
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.record_path, self.record)


def last_lines(path: Path, n: int) -> list[str]:
    """The last n non-empty lines of a log, progress bars' carriage returns counted as line ends."""
    try:
        with open(path, "rb") as f:
            f.seek(max(f.seek(0, 2) - 16384, 0))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()][-n:]
