"""Suite-wide: free the /dev/shm segments that DeepSpeed's CPU jobs leave behind (killed ones included), and
run the Triton kernels in Triton's interpreter where there is no GPU."""

import os
from pathlib import Path

import pytest
import torch

from distill.dist import shm_buffers

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # no GPU here: DeepSpeed jobs run CPU ranks
# Triton's interpreter must be on before distill.kernels is first imported (the kernels are defined then),
# whichever test module collection reaches first; with CUDA the compiled kernels run.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _mapped(paths: set[Path]) -> set[Path]:
    """Those of `paths` that some live process has mapped: a job running beside the suite, whose buffers a
    test's cleanup must not take away. A killed job's buffers are mapped by nobody."""
    names, used = {str(p) for p in paths}, set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # the process ended, or is not ours to read
            continue
        used.update(name for name in (line.split(None, 5)[-1] for line in text.splitlines()) if name in names)
    return {Path(name) for name in used}


@pytest.fixture(autouse=True)
def _release_deepspeed_shm():
    before = set(shm_buffers("*", "*"))  # every job's, every rank's
    yield
    left = set(shm_buffers("*", "*")) - before
    if left:
        for path in left - _mapped(left):
            path.unlink(missing_ok=True)
