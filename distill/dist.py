"""Distributed set-up and the few collectives the stages need.

Ranks come from the launcher's environment (`deepspeed`, `torchrun`, SLURM wrappers). A script run
with plain `python` becomes a world of one, so every entry point also works without a launcher.
Which data a process owns is always decided by the *global* rank, never the local one.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as torch_dist

from distill.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port on the loopback that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_single_process_env() -> None:
    """Without a launcher there is no rendezvous: make this process rank 0 of a world of 1."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def init_distributed() -> DistInfo:
    """Start (or join) the process group through DeepSpeed and return this process's place in it."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    _default_single_process_env()
    # DeepSpeed calls collectives that torch marks deprecated, once per bucket per step: keep logs readable.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    if not torch_dist.is_initialized():
        deepspeed.init_distributed()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    accel = get_accelerator()
    if accel.device_name() == "cuda":
        accel.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device(accel.device_name())
        _share_cpu_threads()
    return DistInfo(torch_dist.get_rank(), torch_dist.get_world_size(), local_rank, device)


def _share_cpu_threads() -> None:
    """Give each CPU rank its share of the cores. By default every rank takes all of them, and two
    ranks on two cores then run about 4x slower than one; an explicit OMP_NUM_THREADS wins."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", 1)))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_world, 1)))


def equal_shards(items: list, rank: int, world: int) -> tuple[list, list[bool]]:
    """This rank's items (rank, rank + world, ...), padded with uncounted repeats of the first so every rank
    has ceil(len / world): ranks that must make the same number of forward calls (ZeRO-3) can."""
    per_rank = -(-len(items) // world)
    mine = list(items[rank::world])
    counted = [True] * len(mine)
    while len(mine) < per_rank:
        mine.append(items[0])
        counted.append(False)
    return mine, counted


def barrier() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (a no-op without a process group); returns t."""
    if torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, src: int = 0):
    """Rank src's Python object on every rank (small JSON-like values only)."""
    if not (torch_dist.is_initialized() and torch_dist.get_world_size() > 1):
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=src)
    return box[0]


def shm_buffers(addr: str, port: str | int, rank: str | int = "*") -> list[Path]:
    """DeepSpeed's CPU all-reduce segments of one job (and rank). DeepSpeed never unlinks them, so every
    CPU job would leave 66 MB per rank in /dev/shm (memory, not disk) behind."""
    return sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_{addr}_{port}_{rank}"))


def release_shm(addr: str, port: str | int, rank: str | int = "*") -> None:
    for path in shm_buffers(addr, port, rank):
        path.unlink(missing_ok=True)


def shutdown() -> None:
    """Wait for every rank, tear the process group down, then free this rank's shared-memory buffer."""
    if torch_dist.is_initialized():
        torch_dist.barrier()
        rank = torch_dist.get_rank()
        torch_dist.destroy_process_group()
        release_shm(os.environ.get("MASTER_ADDR", "127.0.0.1"), os.environ.get("MASTER_PORT", "*"), rank)


def on_main(info: DistInfo, fn: Callable[[], object]):
    """Run fn on rank 0 and give every rank its result; a UserError there is raised on every rank."""
    result: dict = {}
    if info.is_main:
        try:
            result = {"value": fn()}
        except UserError as e:
            result = {"error": str(e)}
    result = broadcast_object(result)
    if "error" in result:
        raise UserError(result["error"])
    return result["value"]


def weight_views(param) -> list[tuple[torch.Tensor, int]]:
    """(flattened storage, index of its first element in the full parameter) for each copy of a weight that a
    forward may read: a ZeRO-3 parameter's partition, and its full tensor while it is gathered (a persistent
    one). Where ZeRO-3 keeps both in one storage (small weights on one rank, after `deepspeed.initialize`)
    the full tensor alone, so an update is applied once. A plain parameter: itself."""
    whole = (param.data.view(-1), 0)
    if not hasattr(param, "ds_tensor"):
        return [whole]
    part = param.ds_tensor.view(-1)
    start = param.ds_tensor.ds_numel * torch_dist.get_rank(group=param.ds_process_group)
    if param.numel() != param.ds_numel:
        return [(part, start)]
    if part.untyped_storage().data_ptr() == whole[0].untyped_storage().data_ptr():
        return [whole]
    return [(part, start), whole]
