"""A rank for tests/distill/test_local_launch.py: writes its environment, arguments and pid to
OUT/rank-R.json, then does what it is told: `ok` exits 0; `fail` has rank 0 exit 3 once rank 1 is up while
rank 1 waits for a minute (as a rank would in a collective its peer never joins); `wait` has every rank
wait for a minute."""

import json
import os
import sys
import time
from pathlib import Path

KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "CROSS_RANK", "CROSS_SIZE", "MASTER_ADDR", "MASTER_PORT")

out, mode = Path(sys.argv[-2]), sys.argv[-1]
rank = int(os.environ["RANK"])
record = {"env": {k: os.environ.get(k) for k in KEYS}, "argv": sys.argv[1:], "pid": os.getpid()}
(out / f"rank-{rank}.tmp").write_text(json.dumps(record))
(out / f"rank-{rank}.tmp").rename(out / f"rank-{rank}.json")
if mode == "fail" and rank == 0:
    while not (out / "rank-1.json").exists():
        time.sleep(0.05)
    sys.exit(3)
if mode in ("fail", "wait"):
    time.sleep(60)
