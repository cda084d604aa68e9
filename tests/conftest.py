"""Suite-wide: free the /dev/shm segments that DeepSpeed's CPU jobs leave behind (killed ones included)."""

import os
from pathlib import Path

import pytest

PATTERN = f"deepspeed_allreduce_buffer_{os.getuid()}_*"
os.environ.setdefault("DS_ACCELERATOR", "cpu")  # no GPU here: DeepSpeed jobs run CPU ranks


@pytest.fixture(autouse=True)
def _release_deepspeed_shm():
    before = set(Path("/dev/shm").glob(PATTERN))
    yield
    for path in set(Path("/dev/shm").glob(PATTERN)) - before:
        path.unlink(missing_ok=True)
