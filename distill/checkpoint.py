"""DeepSpeed checkpoints with everything a resumed run needs to continue bit-for-bit.

DeepSpeed saves the partitioned weights and optimizer state and writes `latest` last, so a kill
during a save leaves `latest` pointing at the previous complete checkpoint. Each rank's random
state is written into the tag directory *before* that save starts (safetensors + JSON, no pickle),
and older tags are pruned only after the new one is complete.

These checkpoints are resume state for the machine that wrote them (DeepSpeed stores them with
torch.save); the artefact to hand to others is the safetensors export.

Node-local storage (`node_local=True`, with DeepSpeed's `checkpoint.use_node_local_storage`): each
node keeps its own ranks' files in its own directory, so the first rank of every node (not only
global rank 0) writes `latest` and prunes; on resume every rank takes rank 0's tag and checks that
its node holds it.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from distill import dist
from distill.errors import UserError


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def latest_tag(ckpt_dir: Path) -> str | None:
    latest = ckpt_dir / "latest"
    return latest.read_text().strip() if latest.is_file() else None


def _rng_paths(tag_dir: Path, rank: int) -> tuple[Path, Path]:
    return tag_dir / f"rng_rank{rank:05d}.safetensors", tag_dir / f"rng_rank{rank:05d}.json"


def save_rng(tag_dir: Path, rank: int) -> None:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": [py_state[0], list(py_state[1]), py_state[2]]}
    st_path, json_path = _rng_paths(tag_dir, rank)
    save_file(tensors, str(st_path))
    json_path.write_text(json.dumps(meta))


def load_rng(tag_dir: Path, rank: int) -> None:
    st_path, json_path = _rng_paths(tag_dir, rank)
    if not st_path.is_file() or not json_path.is_file():
        raise FileNotFoundError(f"checkpoint {tag_dir} has no random state for rank {rank} ({st_path.name}); "
                                "was it written with a different world size?")
    tensors = load_file(str(st_path))
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])
    meta = json.loads(json_path.read_text())
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def _writer(info, node_local: bool) -> bool:
    """Whether this rank writes the shared files of its checkpoint directory."""
    return info.local_rank == 0 if node_local else info.rank == 0


def _write_latest(ckpt_dir: Path, tag: str) -> None:
    tmp = ckpt_dir / "latest.tmp"
    tmp.write_text(tag)
    tmp.replace(ckpt_dir / "latest")


def save(engine, ckpt_dir: Path, step: int, client_state: dict, info, keep: int = 1,
         node_local: bool = False) -> None:
    """Save a checkpoint for `step` on every rank, then keep only the newest `keep` tags."""
    tag = tag_for(step)
    tag_dir = ckpt_dir / tag
    tag_dir.mkdir(parents=True, exist_ok=True)
    save_rng(tag_dir, info.rank)
    dist.barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    dist.barrier()  # every rank's files are complete before any `latest` names them
    if _writer(info, node_local):
        _write_latest(ckpt_dir, tag)
        tags = sorted(p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step-"))
        for old in tags[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def load(engine, ckpt_dir: Path, info) -> dict | None:
    """Restore the latest complete checkpoint; returns its client state, or None if there is none."""
    tag = dist.broadcast_object(latest_tag(ckpt_dir))  # rank 0 decides, so no rank resumes alone
    if tag is None:
        return None
    missing = dist.all_reduce_sum(torch.tensor([float(latest_tag(ckpt_dir) != tag)], dtype=torch.float64))
    if missing.item():  # every rank stops together, none waits in a collective for the others
        raise UserError(f"{int(missing.item())} rank(s) do not find checkpoint {tag} in {ckpt_dir}, from which rank 0 "
                        "resumes: node-local checkpoints must stay on the nodes that wrote them")
    path, client_state = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {ckpt_dir / tag}")
    load_rng(ckpt_dir / tag, info.rank)
    return client_state
