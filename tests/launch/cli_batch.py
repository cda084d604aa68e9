"""Runs many launch-script invocations in one Python process, each as `python SCRIPT ARGS` would run it
(the script executed as __main__ with its own sys.argv), and prints one JSON record per invocation:
{"returncode", "stdout", "stderr"}. Each invocation's file descriptors 1 and 2 go to files of their own,
so whatever reaches them, by whatever path, is in its record.

The table of bad flags costs one interpreter start and one import of torch / transformers / DeepSpeed in
all instead of one per row (about 2.5 s each on 2 cores). Usage: python cli_batch.py < invocations.json,
a list of [script, [args]]."""

import json
import os
import runpy
import sys
import tempfile
import traceback


def run(script: str, args: list[str]) -> dict:
    env, cwd, argv, path = dict(os.environ), os.getcwd(), sys.argv, list(sys.path)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    code = 0
    try:
        sys.stdout.flush(), sys.stderr.flush()
        for fd, f in files.items():
            os.dup2(f.fileno(), fd)
        sys.argv = [script, *args]
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python SCRIPT` puts its folder first
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if e.code is not None and not isinstance(e.code, int):
                print(e.code, file=sys.stderr)
        except BaseException:  # what an uncaught exception does to a process: the traceback, exit 1
            traceback.print_exc()
            code = 1
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        for fd, old in saved.items():
            os.dup2(old, fd)
            os.close(old)
        os.environ.clear(), os.environ.update(env), os.chdir(cwd)
        sys.argv, sys.path[:] = argv, path
    out = {}
    for fd, name in ((1, "stdout"), (2, "stderr")):
        files[fd].seek(0)
        out[name] = files[fd].read().decode("utf-8", "replace")
        files[fd].close()
    return {"returncode": code, **out}


if __name__ == "__main__":
    records = [run(script, args) for script, args in json.load(sys.stdin)]
    print(json.dumps(records))
