"""distill/local_launch.py: the ranks it starts see what the `deepspeed` launcher's see, and a failed or
stopped job leaves no rank running."""

import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from distill.launcher import REPO, deepspeed_command, launcher_choice, stage_env

JOB = "tests/distill/local_launch_job.py"


def ranks(out, n=2) -> list[dict]:
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(n)]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_ranks_get_the_environment_and_arguments_of_the_deepspeed_launcher(tmp_path):
    seen = {}
    for launcher in ("deepspeed", "local"):
        out = tmp_path / launcher
        out.mkdir()
        cmd = deepspeed_command(JOB, ["--flag", "x", str(out), "ok"], 2, launcher)
        done = subprocess.run(cmd, env=stage_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        port = cmd[cmd.index("--master_port") + 1]
        seen[launcher] = [{**r["env"], "argv": r["argv"]} for r in ranks(out)]
        for r in seen[launcher]:
            assert r.pop("MASTER_PORT") == port  # each run its own port; the rest must match
            r["argv"][-2] = "OUT"
    assert seen["local"] == seen["deepspeed"]
    assert [r["RANK"] for r in seen["local"]] == ["0", "1"] and seen["local"][1]["argv"][0] == "--local_rank=1"


def test_a_failed_rank_stops_the_job_with_its_exit_code(tmp_path):
    done = subprocess.run(deepspeed_command(JOB, [str(tmp_path), "fail"], 2, "local"), env=stage_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # rank 1 alone would wait 60 s
    assert done.returncode == 3
    assert "rank 0 exited with code 3" in done.stderr
    assert all(gone(r["pid"]) for r in ranks(tmp_path))


def test_sigterm_to_the_launcher_stops_every_rank(tmp_path):
    proc = subprocess.Popen(deepspeed_command(JOB, [str(tmp_path), "wait"], 2, "local"), env=stage_env(), cwd=REPO)
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"rank-{r}.json").exists() for r in range(2)):
        assert time.monotonic() < deadline and proc.poll() is None, "the ranks never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert all(gone(r["pid"]) for r in ranks(tmp_path))


def test_an_unknown_launcher_is_named(monkeypatch):
    monkeypatch.setenv("UNDO_LAUNCHER", "torchrun")
    with pytest.raises(ValueError, match="UNDO_LAUNCHER='torchrun': expected one of deepspeed, local"):
        launcher_choice()
    assert launcher_choice("deepspeed") == "deepspeed"
    monkeypatch.delenv("UNDO_LAUNCHER")
    assert launcher_choice() == "deepspeed"  # the documented command unless asked
    assert os.path.basename(deepspeed_command(JOB, [], 1, "local")[1]) == "local_launch.py"
