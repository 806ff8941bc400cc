"""torch.distributed set-up for learner ranks (gloo on CPU, NCCL on GPU) via DeepSpeed."""

from __future__ import annotations

import os
import socket
from typing import Any

import torch
import torch.distributed as dist


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def local_rank(rank: int) -> int:
    """The device index this rank uses among the devices it can see.

    Under Ray each GPU actor sees only its own GPU(s) (CUDA_VISIBLE_DEVICES lists Ray's
    ids for it), so the index is the position of its first assigned id there: 0 for
    one GPU, whatever the global rank. Outside Ray, ranks share the visible devices
    round-robin; without CUDA the global rank is kept (gloo ignores it).
    """
    assigned = _ray_gpu_ids()
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if assigned:
        return visible.index(assigned[0]) if assigned[0] in visible else 0
    count = torch.cuda.device_count()
    return rank % count if count else rank


def _ray_gpu_ids() -> list[str]:
    """GPU ids Ray assigned to this process (empty outside a Ray worker or without GPUs)."""
    try:
        import ray
    except ImportError:
        return []
    if not ray.is_initialized():
        return []
    return [str(i) for i in ray.get_gpu_ids()]


def init_distributed(
    rank: int = 0,
    world_size: int = 1,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
    backend: str | None = None,
) -> None:
    """Join (or create) the process group once per process; later calls are no-ops."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() != world_size:
            raise RuntimeError(
                f"process group already has {dist.get_world_size()} ranks, asked for {world_size}"
            )
        return
    os.environ["MASTER_ADDR"] = master_addr
    if master_port is None:
        # a lone rank never reuses an inherited port (a parent process may hold it)
        master_port = free_port() if world_size == 1 else int(os.environ["MASTER_PORT"])
    os.environ["MASTER_PORT"] = str(master_port)
    os.environ["RANK"] = str(rank)
    os.environ["LOCAL_RANK"] = str(local_rank(rank))
    os.environ["WORLD_SIZE"] = str(world_size)
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend or default_backend())


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_objects(obj: Any) -> list[Any]:
    _, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if world()[1] > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()
