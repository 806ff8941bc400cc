"""Policy weights from learner rank 0 to every rollout actor through one collective.

A weight group is a torch.distributed process group of its own (its own TCP store, so
it lives beside the learner's DeepSpeed group): learner rank 0 is rank 0, rollout
actor j is rank j + 1. Rank 0 packs the exported weights into flat buckets of about
`bucket_bytes` (one dtype per bucket), broadcasts each bucket's metadata (names, shapes,
dtypes) and then the bucket itself; every actor loads each bucket into its engine as it
arrives. Neither side ever holds more than one bucket beyond the engine's own weights,
and nothing passes through the driver.

Backends: gloo (CPU tensors) or NCCL (CUDA tensors, one GPU per member). For vLLM
engines this group carries only the metadata, and the bucket bytes go through vLLM's
own NCCL weight-transfer group (see `actorlearner.engines.vllm`).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

Named = tuple[str, torch.Tensor]


@dataclass(frozen=True)
class TensorMeta:
    """What a receiver needs to cut one tensor out of a flat bucket."""

    name: str
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "float32"
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def buckets(
    named: Iterable[Named], bucket_bytes: int
) -> Iterator[tuple[list[TensorMeta], torch.Tensor]]:
    """(metadata, flat tensor) buckets of at most ~bucket_bytes, in order, one dtype each;
    a tensor larger than a bucket goes alone. Each tensor is copied as it arrives (an
    export iterator's tensors are valid only until its next item)."""
    parts: list[torch.Tensor] = []
    metas: list[TensorMeta] = []
    size = 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if parts and (tensor.dtype != parts[0].dtype or size + nbytes > bucket_bytes):
            yield metas, torch.cat(parts)
            parts, metas, size = [], [], 0
        parts.append(tensor.detach().reshape(-1).clone())
        metas.append(
            TensorMeta(name, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape))
        )
        size += nbytes
    if parts:
        yield metas, torch.cat(parts)


def unpack(metas: list[TensorMeta], flat: torch.Tensor) -> list[Named]:
    """Views of `flat` with each tensor's name and shape."""
    out, offset = [], 0
    for meta in metas:
        out.append((meta.name, flat[offset : offset + meta.numel].view(meta.shape)))
        offset += meta.numel
    if offset != flat.numel():
        raise ValueError(f"bucket holds {flat.numel()} elements, its metadata {offset}")
    return out


@dataclass(frozen=True)
class GroupSpec:
    """Where and how the members of one weight group meet (sent to each of them)."""

    address: str
    port: int
    world_size: int
    backend: str  # gloo | nccl
    generation: int  # bumps on every rebuild; a member in an older one must rejoin
    timeout_s: float = 600.0
    vllm_port: int = 0  # vLLM engines: the port of vLLM's own NCCL group (0: none)
    vllm_workers: int = 1  # vLLM workers per engine (its tensor-parallel size)


class WeightGroup:
    """One member's handle on a weight group: broadcasts from rank 0, objects and tensors."""

    def __init__(self, spec: GroupSpec, rank: int):
        timeout = timedelta(seconds=spec.timeout_s)
        self.spec, self.rank = spec, rank
        self.store = dist.TCPStore(
            spec.address, spec.port, spec.world_size, is_master=rank == 0, timeout=timeout
        )
        prefixed = dist.PrefixStore(f"weights/{spec.generation}", self.store)
        if spec.backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            self.pg: Any = dist.ProcessGroupNCCL(prefixed, rank, spec.world_size, options)
        elif spec.backend == "gloo":
            self.device = torch.device("cpu")
            self.pg = dist.ProcessGroupGloo(prefixed, rank, spec.world_size, timeout)
        else:
            raise ValueError(f"weight group backend must be 'gloo' or 'nccl', got {spec.backend!r}")

    def broadcast(self, tensor: torch.Tensor) -> None:
        self.pg.broadcast([tensor], _root()).wait()

    def broadcast_object(self, obj: Any = None) -> Any:
        """Rank 0's `obj` on every member (pickled; only metadata travels this way)."""
        if self.rank == 0:
            data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
            size = torch.tensor([data.numel()], dtype=torch.int64)
        else:
            size = torch.zeros(1, dtype=torch.int64)
        size = size.to(self.device)
        self.broadcast(size)
        if self.rank != 0:
            data = torch.empty(int(size.item()), dtype=torch.uint8)
        data = data.to(self.device)
        self.broadcast(data)
        return obj if self.rank == 0 else pickle.loads(data.cpu().numpy().tobytes())

    def close(self) -> None:
        self.pg = None
        self.store = None  # type: ignore[assignment]


def _root() -> Any:
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    return opts


BucketSender = Callable[[list[TensorMeta], torch.Tensor], None]


def send_weights(
    group: WeightGroup,
    named: Iterable[Named],
    bucket_bytes: int,
    version: int,
    data: BucketSender | None = None,
) -> dict[str, float]:
    """Rank 0: a header with `version`, then every bucket's metadata and bytes, then the end
    marker. `data` sends a bucket's bytes another way (vLLM's NCCL group); by default they
    go through `group`."""
    group.broadcast_object({"version": int(version)})
    count, total = 0, 0
    for metas, flat in buckets(named, bucket_bytes):
        group.broadcast_object(metas)
        if data is None:
            group.broadcast(flat.to(group.device))
        else:
            data(metas, flat)
        count += 1
        total += flat.numel() * flat.element_size()
    group.broadcast_object(None)
    return {"buckets": float(count), "bytes": float(total)}


BucketReceiver = Callable[[list[TensorMeta]], None]


def receive_weights(
    group: WeightGroup,
    load: Callable[[list[Named]], None] | None,
    data: BucketReceiver | None = None,
) -> int:
    """Rank > 0: load every bucket as it arrives (`load` gets views of the received bucket);
    with `data`, the engine receives the bytes itself (vLLM). Returns the sent version."""
    header = group.broadcast_object()
    while (metas := group.broadcast_object()) is not None:
        if data is not None:
            data(metas)
            continue
        flat = torch.empty(sum(m.numel for m in metas), dtype=metas[0].torch_dtype)
        flat = flat.to(group.device)
        group.broadcast(flat)
        assert load is not None, "receive_weights needs `load` or `data`"
        load(unpack(metas, flat))
    return int(header["version"])
