"""Moving policy weights from the learner to the rollout engines.

CPU / HF path: the state goes through the Ray object store once (`RolloutGroup.
update_weights`), every actor copies it in place. GPU / vLLM path: learner rank 0 and
the vLLM workers share an NCCL group; parameters travel in flat, same-dtype buckets of
about `bucket_mb`, so a large model needs few collectives and little extra memory.
The bucket plan is plain data, computed identically on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str  # e.g. "bfloat16" (torch.<dtype>)
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def policy_state(model: torch.nn.Module, lora_only: bool = False) -> dict[str, torch.Tensor]:
    """A CPU copy of what rollout engines load: the full state in transformers naming, or
    (with `lora_only`, for a PEFT model) the adapter state from `get_peft_model_state_dict`."""
    if lora_only:
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model)
    else:
        state = _base(model).state_dict()
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _base(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def bucket_plan(metas: Iterable[TensorMeta], bucket_mb: float = 256.0) -> list[list[TensorMeta]]:
    """Group tensors, in order, into buckets of one dtype and at most ~`bucket_mb` each
    (a tensor larger than that gets a bucket of its own)."""
    limit = int(bucket_mb * 2**20)
    buckets: list[list[TensorMeta]] = []
    size = 0
    for meta in metas:
        nbytes = meta.numel * torch.empty((), dtype=getattr(torch, meta.dtype)).element_size()
        last = buckets[-1] if buckets else None
        if last is None or last[0].dtype != meta.dtype or size + nbytes > limit:
            buckets.append([meta])
            size = nbytes
        else:
            last.append(meta)
            size += nbytes
    return buckets


def metas_of(state: Mapping[str, torch.Tensor]) -> list[TensorMeta]:
    return [
        TensorMeta(k, str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in state.items()
    ]


def pack(bucket: list[TensorMeta], state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate a bucket's tensors into one flat tensor (the sender side)."""
    return torch.cat([state[m.name].reshape(-1) for m in bucket])


def unpack(bucket: list[TensorMeta], flat: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Split a received flat tensor back into named tensors (views, no copy)."""
    out, offset = [], 0
    for m in bucket:
        out.append((m.name, flat[offset : offset + m.numel].view(m.shape)))
        offset += m.numel
    return out


def empty_flat(bucket: list[TensorMeta], device: Any) -> torch.Tensor:
    """The receive buffer for one bucket."""
    return torch.empty(
        sum(m.numel for m in bucket), dtype=getattr(torch, bucket[0].dtype), device=device
    )


class NcclWeightSender:
    """Learner rank 0's end of the NCCL weight-sync group (GPU only; needs vLLM installed).

    Usage, with the rollout actors' engines joining at the same time through
    `VLLMEngine.init_weight_sync(host, port, rank_offset=1, world_size)`::

        sender = NcclWeightSender(host, port, world_size)      # rank 0
        plan = sender.plan(model.state_dict())                 # send `plan` to the actors
        sender.send(model.state_dict(), plan)                  # actors: engine.receive_weights(plan, v)
    """

    def __init__(self, host: str, port: int, world_size: int, bucket_mb: float = 256.0):
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        group = StatelessProcessGroup.create(host=host, port=port, rank=0, world_size=world_size)
        self.comm = PyNcclCommunicator(
            group, device=torch.device("cuda", torch.cuda.current_device())
        )
        self.bucket_mb = bucket_mb

    def plan(self, state: Mapping[str, torch.Tensor]) -> list[list[TensorMeta]]:
        return bucket_plan(metas_of(state), self.bucket_mb)

    @torch.no_grad()
    def send(self, state: Mapping[str, torch.Tensor], plan: list[list[TensorMeta]]) -> None:
        stream = torch.cuda.current_stream()
        for bucket in plan:
            flat = pack(bucket, state).cuda()
            self.comm.broadcast(flat, src=0, stream=stream)
        stream.synchronize()
