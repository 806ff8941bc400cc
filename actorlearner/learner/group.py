"""1..N learner ranks as Ray actors forming one torch.distributed group.

The group looks like one `LearnerBackend` to the driver: every call fans out to all
ranks (each takes its share of the global batch inside the backend) and returns rank
0's answer, which already holds the all-reduced metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from actorlearner.learner.config import LearnerConfig
from actorlearner.learner.sft import SFTBatch
from actorlearner.trajectory import Trajectory


class LearnerWorker:
    """One rank: owns a DeepSpeedLearner once `setup` has joined the process group."""

    def __init__(self, cfg: LearnerConfig, rank: int, world_size: int, num_threads: int = 1):
        import torch

        torch.set_num_threads(num_threads)
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.learner: Any = None  # a DeepSpeedLearner once set up
        self.weight_group: Any = None  # rank 0 in a collective weight push (rollout/collective.py)
        self.vllm_group: Any = None  # rank 0 of vLLM's NCCL group, for vLLM engines

    def address(self) -> tuple[str, int]:
        from actorlearner.learner.distributed import free_port

        return ray.util.get_node_ip_address(), free_port()

    def setup(self, master_addr: str, master_port: int) -> int:
        from actorlearner.learner.deepspeed_backend import DeepSpeedLearner

        self.learner = DeepSpeedLearner(
            self.cfg, self.rank, self.world_size, master_addr=master_addr, master_port=master_port
        )
        return self.learner.pad_id

    def call(self, method: str, *args, **kwargs) -> Any:
        return getattr(self.learner, method)(*args, **kwargs)

    def counters(self) -> tuple[int, int]:
        return self.learner.version, self.learner.step

    def device_info(self) -> dict[str, Any]:
        """The GPU ids Ray gave this rank and the LOCAL_RANK it set for DeepSpeed."""
        import os

        return {
            "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
            "local_rank": os.environ["LOCAL_RANK"],
        }

    def weight_device(self) -> str:
        return self.learner.backend.device.type

    def join_weight_group(self, spec: Any) -> None:
        """Rank 0: join a new weight group (and vLLM's NCCL group when `spec` names one)."""
        from actorlearner.rollout.collective import WeightGroup

        if self.weight_group is not None:
            self.weight_group.close()
        if self.vllm_group is not None:
            self.vllm_group.destroy()  # vLLM's communicator: aborts the old group's NCCL comm
        self.weight_group, self.vllm_group = WeightGroup(spec, 0), None
        if spec.vllm_port:
            from actorlearner.engines.vllm import trainer_group

            self.vllm_group = trainer_group(spec)

    def push_weights(self, bucket_bytes: int) -> dict[str, float]:
        """Every rank drains the export (collective under ZeRO-3); rank 0 broadcasts it in
        buckets to the weight group. Returns rank 0's counts (no tensors)."""
        from actorlearner.learner.export import iter_weights
        from actorlearner.rollout.collective import send_weights

        backend = self.learner.backend
        named = iter_weights(backend.policy, getattr(backend, "zero3", False))
        try:
            if self.rank != 0:
                return {}
            if self.weight_group is None:
                raise RuntimeError("learner rank 0 is in no weight group: join_weight_group first")
            data = None
            if self.vllm_group is not None:
                from actorlearner.engines.vllm import send_bucket

                group = self.vllm_group
                data = lambda metas, flat: send_bucket(group, metas, flat)  # noqa: E731
            return send_weights(self.weight_group, named, bucket_bytes, self.learner.version, data)
        finally:
            for _ in named:  # the other ranks gather until the end, so rank 0 does too
                pass

    def greedy(self, prompt: list[int], max_new_tokens: int) -> tuple[list[int], list[float]]:
        from actorlearner.learner.policy import greedy_continuation

        backend = self.learner.backend
        return greedy_continuation(backend.policy, prompt, max_new_tokens, backend.device)


def _strategy(placement: Any, rank: int) -> Any:
    return placement.strategy("learner", rank) if placement is not None else None


class LearnerGroup:
    """Driver-side handle on N learner ranks (N=1 works too); same methods as the backend."""

    def __init__(
        self,
        cfg: LearnerConfig,
        num_ranks: int = 1,
        num_cpus_per_rank: float = 1,
        num_gpus_per_rank: float = 0,
        placement: Any = None,
    ):
        """`placement`: an `actorlearner.placement.Placement`; rank i then runs in its bundle."""
        if num_ranks < 1:
            raise ValueError(f"num_ranks must be >= 1 (got {num_ranks})")
        if not ray.is_initialized():
            raise RuntimeError("LearnerGroup needs Ray: call ray.init(...) first")
        actor = ray.remote(num_cpus=num_cpus_per_rank, num_gpus=num_gpus_per_rank)(LearnerWorker)
        threads = max(1, int(num_cpus_per_rank))
        self.workers: list[Any] = [
            actor.options(scheduling_strategy=_strategy(placement, r)).remote(
                cfg, r, num_ranks, threads
            )
            for r in range(num_ranks)
        ]
        addr, port = ray.get(self.workers[0].address.remote())
        self.pad_id = ray.get([w.setup.remote(addr, port) for w in self.workers])[0]
        self.cfg = cfg

    def _all(self, method: str, *args, **kwargs) -> Any:
        refs = [w.call.remote(method, *args, **kwargs) for w in self.workers]
        return ray.get(refs)[0]

    @property
    def version(self) -> int:
        return ray.get(self.workers[0].counters.remote())[0]

    @property
    def step(self) -> int:
        return ray.get(self.workers[0].counters.remote())[1]

    def device_info(self) -> list[dict[str, Any]]:
        return ray.get([w.device_info.remote() for w in self.workers])

    def greedy(self, prompt: list[int], max_new_tokens: int) -> tuple[list[int], list[float]]:
        """The policy's own greedy continuation (every rank runs it: ZeRO-3 is collective)."""
        return ray.get([w.greedy.remote(prompt, max_new_tokens) for w in self.workers])[0]

    def sft_step(self, batch: SFTBatch) -> dict[str, float]:
        return self._all("sft_step", ray.put(batch))

    def sft_eval(self, batches: Sequence[SFTBatch]) -> dict[str, float]:
        return self._all("sft_eval", ray.put(list(batches)))

    def ppo_step(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        return self._all("ppo_step", ray.put(list(trajectories)))

    def state_dict_for_actors(self):
        return self._all("state_dict_for_actors")

    # ----------------------------------------------- collective weight push (rank 0 sends)
    def weight_endpoint(self) -> tuple[str, int, str]:
        """(address, free port, device type) of rank 0, where a weight group meets."""
        w = self.workers[0]
        (address, port), device = ray.get([w.address.remote(), w.weight_device.remote()])
        return address, port, device

    def join_weight_group(self, spec: Any) -> ray.ObjectRef:
        return self.workers[0].join_weight_group.remote(spec)

    def push_weights(self, bucket_bytes: int) -> list[ray.ObjectRef]:
        """Start a push on every rank; the refs resolve to small counts, never tensors."""
        return [w.push_weights.remote(bucket_bytes) for w in self.workers]

    def should_checkpoint(self) -> bool:
        return self._all("should_checkpoint")

    def save_checkpoint(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        return self._all("save_checkpoint", str(directory), extra)

    def load_checkpoint(self, directory: str | Path, tag: str | None = None) -> dict[str, Any]:
        return self._all("load_checkpoint", str(directory), tag)

    def export_hf(self, directory: str | Path, merge_lora: bool = True) -> Path | None:
        return self._all("export_hf", str(directory), merge_lora)

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []
