"""Suite-wide: free the /dev/shm segments that DeepSpeed's CPU jobs leave behind (killed ones included), and
run the Triton kernels in Triton's interpreter where there is no GPU."""

import os
from pathlib import Path

import pytest
import torch

PATTERN = f"deepspeed_allreduce_buffer_{os.getuid()}_*"
os.environ.setdefault("DS_ACCELERATOR", "cpu")  # no GPU here: DeepSpeed jobs run CPU ranks
# Triton's interpreter must be on before distill.kernels is first imported (the kernels are defined then),
# whichever test module collection reaches first; with CUDA the compiled kernels run.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _release_deepspeed_shm():
    before = set(Path("/dev/shm").glob(PATTERN))
    yield
    for path in set(Path("/dev/shm").glob(PATTERN)) - before:
        path.unlink(missing_ok=True)
