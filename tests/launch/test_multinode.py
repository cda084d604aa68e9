"""Two nodes simulated on this machine: one process per "node", each started by its own `deepspeed`
launcher (`--hostfile` naming two hosts with one slot each, `--no_ssh --node_rank i`, master on
127.0.0.1), as a scheduler starts them on a cluster. The results must equal one node with two processes.
"""

import json
import subprocess

import pytest
from launch_helpers import check, run_deepspeed, save_tiny_model

from distill.dist import free_port, release_shm
from distill.launcher import REPO, deepspeed_bin, stage_env

pytestmark = pytest.mark.slow


def run_two_nodes(script: str, per_node_args, tmp_path) -> None:
    """Start `script` on node ranks 0 and 1 (per_node_args(i) -> that node's arguments); wait for both."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    port = str(free_port())
    procs = [subprocess.Popen([deepspeed_bin(), "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(i),
                               "--master_addr", "127.0.0.1", "--master_port", port, str(REPO / script),
                               *per_node_args(i)], env=stage_env(), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
        release_shm("127.0.0.1", port)
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"node {i} exited with {p.returncode}:\n{out[-4000:]}"


def kd_losses(out) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss/kd"] for r in rows if "loss/kd" in r}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models") / "teacher")


def precompute_args(teacher, out):
    return ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--teacher", str(teacher), "--out", str(out),
            "--rows", "128", "--seq-len", "32", "--top-k", "8", "--records-per-shard", "32"]


def distill_args(teacher, cache, out, extra=()):
    return ["--ds_config", str(REPO / "ds_configs/zero3.json"), "--teacher", str(teacher), "--cache", str(cache),
            "--out", str(out), "--alpha", "0.5", "--retain-gap", "-2", "--steps", "20", "--global-batch", "8",
            "--micro-batch", "4", "--seq-len", "32", "--eval-every", "0", "--save-every", "10",
            "--final-eval-per-format", "1", *extra]


def test_two_nodes_write_the_same_cache_and_train_the_same_student(teacher, tmp_path):
    one, two = tmp_path / "cache-1node", tmp_path / "cache-2nodes"
    check(run_deepspeed("launch/precompute.py", precompute_args(teacher, one), nproc=2, timeout=600))
    run_two_nodes("launch/precompute.py", lambda i: precompute_args(teacher, two), tmp_path)
    files = sorted(p.name for p in one.iterdir())
    assert files == sorted(p.name for p in two.iterdir()) and len(files) == 5  # 4 shards + manifest
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name

    # Distill from the 2-node cache on both nodes, each keeping its resume state in its own scratch.
    ref, out = tmp_path / "student-1node", tmp_path / "student-2nodes"
    check(run_deepspeed("launch/distill.py", distill_args(teacher, one, ref), nproc=2, timeout=600))
    scratch = [tmp_path / f"node{i}-scratch" for i in (0, 1)]
    run_two_nodes("launch/distill.py", lambda i: distill_args(teacher, two, out, ["--scratch", str(scratch[i])]),
                  tmp_path)
    a, b = kd_losses(ref), kd_losses(out)
    assert sorted(a) == sorted(b) == list(range(1, 21))
    # Bit for bit: the same cache bytes, world size 2 either way, and with 2 ranks every all-reduce element
    # is one addition a + b, whichever transport or algorithm carries it (addition commutes exactly).
    assert all(a[s] == b[s] for s in a), [(s, a[s], b[s]) for s in a if a[s] != b[s]]
    assert json.loads((out / "summary.json").read_text())["steps"] == 20
    assert not (out / "checkpoints").exists()  # resume state stayed on the "nodes"
    for i, node in enumerate(scratch):
        [run] = list(node.iterdir())
        ckpt = run / "checkpoints"
        assert (ckpt / "latest").read_text() == "step-00000010"
        names = {p.name for p in (ckpt / "step-00000010").iterdir()}
        # each node holds its own rank's partitions and random state, not the other node's
        assert {f"zero_pp_rank_{i}_mp_rank_00_optim_states.pt", f"rng_rank0000{i}.json"} <= names
        assert not any(f"rank_{1 - i}_" in n or f"rank0000{1 - i}" in n for n in names)


def test_the_slurm_script_parses():
    script = REPO / "launch/slurm_distill.sbatch"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert "--no_ssh --node_rank" in text and "UNDO_SCRATCH" in text
