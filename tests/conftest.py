"""Suite-wide: free the /dev/shm segments that DeepSpeed's CPU jobs leave behind (killed ones included), and
run the Triton kernels in Triton's interpreter where there is no GPU."""

import os
from pathlib import Path

import pytest
import torch

from distill.dist import shm_buffers

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # no GPU here: DeepSpeed jobs run CPU ranks
# Jobs start their ranks with distill/local_launch.py, about 5 s sooner than the `deepspeed` launcher (the
# same environment per rank: tests/distill/test_local_launch.py); tests that pass launcher="deepspeed" keep
# each entry point covered under the documented command.
os.environ.setdefault("UNDO_LAUNCHER", "local")
# Triton's interpreter must be on before distill.kernels is first imported (the kernels are defined then),
# whichever test module collection reaches first; with CUDA the compiled kernels run.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _mapped(paths: set[Path]) -> set[Path]:
    """Those of `paths` that some live process has mapped: a running job's. A killed job's are mapped by nobody."""
    names, used = {str(p) for p in paths}, set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # the process ended, or is not ours to read
            continue
        used.update(name for name in (line.split(None, 5)[-1] for line in text.splitlines()) if name in names)
    return {Path(name) for name in used}


def _listening_ports() -> set[int]:
    """TCP ports something listens on: a live job's rendezvous port stays open from before its rank 0 creates
    its buffer until after every rank is done with it."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state = fields[1], fields[3]
            if state == "0A":  # LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def _orphans(paths: set[Path]) -> set[Path]:
    """The buffers of jobs that are gone: mapped by no process, their rendezvous port closed. Both tests matter
    when tests run in parallel (pytest -n): a job of another worker's test may have created its buffer a moment
    ago and not yet mapped it, but its port is open; a killed job's ranks may outlive it and still map theirs."""
    ports = _listening_ports()
    return {p for p in paths - _mapped(paths) if int(p.name.rsplit("_", 2)[1]) not in ports}


@pytest.fixture(autouse=True)
def _release_deepspeed_shm():
    before = set(shm_buffers("*", "*"))  # every job's, every rank's
    yield
    left = set(shm_buffers("*", "*")) - before
    for path in _orphans(left):
        path.unlink(missing_ok=True)
