"""vLLM engine (GPU only, `pip install .[gpu]`, pinned vllm==0.33.0). Never ran here (no GPU).

Every vLLM call below was checked against the vllm 0.33.0 wheel's sources; none has run.

Generation: `vllm.LLM.generate` with `TokensPrompt` token-id prompts and one
`SamplingParams` per request (its own seed), `logprobs=0` (the sampled token's logprob
only; `CompletionOutput.logprobs` is then a list of {token id: Logprob} dicts).

Weights go through vLLM's RL weight-update session, which 0.33.0's `LLM` offers as
methods (`init_weight_transfer_engine`, `start_weight_update`, `update_weights`,
`finish_weight_update`, each a `collective_rpc` to the worker method of that name;
`init_weight_transfer_engine` takes {"init_info": ...}, `update_weights` takes
{"update_info": ...}). A worker refuses a second `start` before `finish`, and between
the two it reloads the weights layer by layer: a layer's parameters sit on the meta
device (its old tensors set aside) until all of its new ones arrive, or `finish`.

- `weight_transfer="ipc"` (object-store pushes): the engine core shares the actor's GPU.
  The actor packs one bucket at a time into a staging buffer on that GPU (raw bytes, back
  to back) and sends vLLM's IPC backend, packed mode, the buffer's CUDA IPC handle keyed
  by the GPU's UUID string, with each tensor's name, dtype name, shape and byte size. The
  handle travels pickled (`ipc_handles_pickled`, base64), which vLLM accepts only with
  VLLM_ALLOW_INSECURE_SERIALIZATION=1; the worker copies each tensor out of the buffer
  before `update_weights` returns, so one buffer serves every bucket.
- `weight_transfer="nccl"` (collective pushes from learner rank 0 on another GPU):
  vLLM's NCCL group has learner rank 0 as rank 0 and each engine's workers as the next
  ranks (`rank_offset` per actor). 0.33.0's trainer-side engine
  (`NCCLTrainerWeightTransferEngine`) drives a single engine at rank offset 1 itself, so
  learner rank 0 uses the helpers it is built on: `nccl_common.trainer_init` opens rank
  0's end, `packed_tensor.packed_nccl_broadcast_producer` sends a bucket while the
  engine's workers receive it in `update_weights` (names, dtype names, shapes only). In
  0.33.0 the packing settings (`packed`, buffer size, buffer count) are part of the
  worker's init info, not of each update, and both ends must use the same ones
  (`NCCL_PACKING`). The bucket metadata reaches the actor through the weight group
  (`actorlearner.rollout.collective`).

Logprobs: vLLM is asked for `logprobs_mode="processed_logprobs"`, i.e. log_softmax of
the logits after temperature (greedy: of the logits as they are). That is our contract
when no top-k/top-p truncation is applied; with truncation vLLM renormalises over the
kept tokens, so the engine warns and marks `Generation.extra["truncated_logprobs"]`.
vLLM raises a temperature in (0, 0.01) to 0.01 and rejects one above 2, so the engine
refuses those.
"""

from __future__ import annotations

import base64
import logging
import os
import pickle
from collections.abc import Iterator, Mapping
from typing import Any

from actorlearner.engines import sampling as sampler
from actorlearner.engines.base import Generation, SamplingParams

log = logging.getLogger(__name__)
_SKIP_PREFIXES = ("v_head.", "value_head.", "score.")
_STRIP_PREFIXES = ("module.", "lm.", "_orig_mod.")
# How both ends of vLLM's NCCL group cut a bucket into broadcasts (vLLM's defaults).
NCCL_PACKING = {"packed": True, "packed_buffer_size_bytes": 1 << 30, "packed_num_buffers": 2}
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 2.0  # vLLM 0.33.0: raised to / rejected above


def engine_name(key: str) -> str:
    """A learner-side key in the plain transformers naming vLLM's loaders expect."""
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key.replace(".base_layer.", ".")


def engine_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """Wrapper prefixes stripped, value-head keys dropped; LoRA adapters refused (the learner
    merges them before export)."""
    if any(".lora_" in k for k in state):
        raise ValueError("the vLLM engine loads merged weights; merge the LoRA adapter first")
    return {
        engine_name(k): v for k, v in state.items() if not engine_name(k).startswith(_SKIP_PREFIXES)
    }


def _nbytes(tensor: Any) -> int:
    return int(tensor.numel() * tensor.element_size())


def buckets(state: Mapping[str, Any], bucket_mb: float) -> Iterator[list[str]]:
    """Key groups of at most ~bucket_mb each, in order (a larger tensor goes alone)."""
    limit, size = bucket_mb * 2**20, 0.0
    bucket: list[str] = []
    for key, tensor in state.items():
        nbytes = _nbytes(tensor)
        if bucket and size + nbytes > limit:
            yield bucket
            bucket, size = [], 0.0
        bucket.append(key)
        size += nbytes
    if bucket:
        yield bucket


def raw_bytes(tensor: Any) -> Any:
    """A tensor's bytes as a flat uint8 tensor (how vLLM's packed transfers lay them out)."""
    import torch

    return torch.as_tensor(tensor).detach().contiguous().reshape(-1).view(torch.uint8)


def pack(buffer: Any, named: list[tuple[str, Any]]) -> None:
    """Copy tensors into `buffer` back to back, as raw bytes, from its start."""
    offset = 0
    for _, tensor in named:
        data = raw_bytes(tensor)
        buffer[offset : offset + data.numel()].copy_(data)
        offset += data.numel()


def ipc_update_info(named: list[tuple[str, Any]], handle: tuple, gpu_uuid: str) -> dict[str, Any]:
    """vLLM's packed IPC `update_info` for tensors `pack`ed into the buffer whose
    `reduce_tensor` arguments are `handle`. The {GPU UUID: handle} dict is pickled
    (`ipc_handles_pickled`) so the RPC to the engine core carries only strings and lists."""
    return {
        "names": [n for n, _ in named],
        "dtype_names": [str(t.dtype).removeprefix("torch.") for _, t in named],
        "shapes": [list(t.shape) for _, t in named],
        "tensor_sizes": [_nbytes(t) for _, t in named],
        "ipc_handles_pickled": base64.b64encode(pickle.dumps({gpu_uuid: handle})).decode("ascii"),
    }


class IpcStaging:
    """One buffer on this actor's GPU that vLLM's engine core reads through CUDA IPC."""

    def __init__(self, nbytes: int):
        import torch
        from torch.multiprocessing.reductions import reduce_tensor

        self.device = torch.device("cuda", torch.cuda.current_device())
        self.uuid = str(torch.cuda.get_device_properties(self.device).uuid)
        self.buffer: Any = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=self.device)
        self.handle = reduce_tensor(self.buffer)[1]  # the arguments, not the rebuild function

    def fill(self, named: list[tuple[str, Any]]) -> None:
        import torch

        pack(self.buffer, named)
        torch.cuda.current_stream(self.device).synchronize()  # another process reads it next

    def close(self) -> None:
        import torch

        self.buffer = None
        torch.cuda.ipc_collect()  # the engine core let go of it at finish_weight_update


def nccl_init_info(spec: Any, rank: int) -> dict[str, Any]:
    """vLLM's NCCL `init_info` for the engine of weight-group member `rank` (actors are
    1..n): its workers follow learner rank 0 and the workers of the actors before it."""
    return {
        "master_address": spec.address,
        "master_port": spec.vllm_port,
        "rank_offset": 1 + (rank - 1) * spec.vllm_workers,
        "world_size": 1 + (spec.world_size - 1) * spec.vllm_workers,
        **NCCL_PACKING,
    }


def nccl_update_info(metas: list[Any]) -> dict[str, Any]:
    """vLLM's NCCL `update_info` for one bucket: only its tensors' names, dtypes and shapes
    (0.33.0 takes the packing settings once, in the init info)."""
    return {
        "names": [m.name for m in metas],
        "dtype_names": [m.dtype for m in metas],
        "shapes": [list(m.shape) for m in metas],
    }


def trainer_group(spec: Any) -> Any:
    """Learner rank 0's end of vLLM's NCCL weight-transfer group (rank 0 of
    1 + actors x workers); the engines join at the same time (`init_weight_transfer`).
    Needs vLLM on the learner's machine (the gpu extra)."""
    from vllm.distributed.weight_transfer.nccl_common import trainer_init

    info = nccl_init_info(spec, 1)
    return trainer_init(
        {k: info[k] for k in ("master_address", "master_port", "world_size")}, rank=0
    )


def send_bucket(group: Any, metas: list[Any], flat: Any) -> None:
    """Broadcast one bucket to every engine's workers (they run `update_weights` meanwhile),
    cut into broadcasts exactly as the workers cut it (`NCCL_PACKING`)."""
    import torch
    from vllm.distributed.weight_transfer.packed_tensor import packed_nccl_broadcast_producer

    from actorlearner.rollout.collective import unpack

    flat = flat.to(group.device)  # the communicator's GPU (vLLM's PyNcclCommunicator.device)
    if flat.is_cuda:  # vLLM packs on side streams: the bucket must be complete first
        torch.cuda.current_stream(flat.device).synchronize()
    packed_nccl_broadcast_producer(
        iterator=iter(unpack(metas, flat)),
        group=group,
        src=0,
        post_iter_func=lambda item: item[1],
        buffer_size_bytes=NCCL_PACKING["packed_buffer_size_bytes"],
        num_buffers=NCCL_PACKING["packed_num_buffers"],
    )


class VLLMEngine:
    """The `Engine` interface over `vllm.LLM` (one GPU: the rollout actor's)."""

    _staging = IpcStaging  # where `load_weights` puts each bucket for the engine core

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        version: int = 0,
        bucket_mb: float = 512.0,
        weight_transfer: str = "ipc",
        **llm_kwargs: Any,
    ):
        """`weight_transfer`: "ipc" (weights arrive in this actor, see `load_weights`) or
        "nccl" (from learner rank 0 on another GPU, see `receive_bucket`)."""
        if weight_transfer not in ("ipc", "nccl"):
            raise ValueError(f"weight_transfer must be 'ipc' or 'nccl', got {weight_transfer!r}")
        workers = int(llm_kwargs.get("tensor_parallel_size", 1))
        workers *= int(llm_kwargs.get("pipeline_parallel_size", 1))
        if weight_transfer == "ipc" and workers != 1:
            raise ValueError(
                "CUDA IPC weight loads reach one GPU: use tensor_parallel_size=1 with "
                "rollout.weight_sync=object_store, or rollout.weight_sync=collective"
            )
        try:
            import vllm
            from vllm.config import WeightTransferConfig
        except ImportError as exc:
            raise ImportError(
                "the vLLM engine needs the GPU extra: pip install 'actorlearner[gpu]' (vllm==0.33.0); "
                "on CPU machines use engine='hf'"
            ) from exc
        from actorlearner.models import check_model_path, load_tokenizer

        if weight_transfer == "ipc":  # the engine core unpickles the IPC handles
            os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        path = check_model_path(model_path)
        self.llm = vllm.LLM(
            model=path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=enable_prefix_caching,
            seed=seed,
            logprobs_mode="processed_logprobs",
            weight_transfer_config=WeightTransferConfig(backend=weight_transfer),
            **llm_kwargs,
        )
        self.weight_transfer = weight_transfer
        self._updating = False  # a weight-update session is open in vLLM's workers
        self._joined = False  # in a vLLM NCCL group (collective pushes)
        if weight_transfer == "ipc":
            self.llm.init_weight_transfer_engine({"init_info": {"packed": True}})
        self.tokenizer = load_tokenizer(path)
        self.version = version
        self.seed = seed
        self.bucket_mb = bucket_mb
        self.max_positions = self.llm.llm_engine.model_config.max_model_len
        self._warned = False

    def _params(self, sampling: SamplingParams, seed: int | None) -> Any:
        from vllm import SamplingParams as VSampling

        return VSampling(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,  # 0: off, as in our SamplingParams
            max_tokens=sampling.max_new_tokens,
            stop_token_ids=list(sampling.stop_token_ids),
            ignore_eos=True,  # only the stop ids we were given end a reply
            include_stop_str_in_output=True,
            skip_special_tokens=False,
            detokenize=False,
            logprobs=0,  # the sampled token's logprob only
            seed=seed,
        )

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        from vllm.inputs import TokensPrompt

        sampler.validate(sampling)
        t = sampling.temperature
        if 0 < t < MIN_TEMPERATURE or t > MAX_TEMPERATURE:
            raise ValueError(
                f"temperature {t} is outside what vLLM samples with: use 0 (greedy) or "
                f"{MIN_TEMPERATURE}..{MAX_TEMPERATURE}"
            )
        truncated = t > 0 and (sampling.top_k > 0 or sampling.top_p < 1.0)
        if truncated and not self._warned:
            log.warning("vLLM logprobs with top-k/top-p are over the truncated distribution")
            self._warned = True
        seeds = sampler.request_seeds(sampling.seed, self.seed, len(prompts))
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts],
            [self._params(sampling, s) for s in seeds],
            use_tqdm=False,
        )
        return [self._generation(out, sampling, truncated) for out in outputs]

    @staticmethod
    def _generation(out: Any, sampling: SamplingParams, truncated: bool) -> Generation:
        seq = out.outputs[0]
        ids = list(seq.token_ids)
        lps = [step[t].logprob for step, t in zip(seq.logprobs, ids, strict=True)]
        stopped = bool(ids) and ids[-1] in sampling.stop_token_ids
        extra = {"truncated_logprobs": True} if truncated else {}
        return Generation(ids, lps, "stop" if stopped else "length", extra)

    # ------------------------------------------------ vLLM's weight-update session
    def begin_update(self) -> None:
        """Open a weight-update session. One a failed push left open is closed first (vLLM
        refuses a second start); the actor waits for a full push before it samples again."""
        if self._updating:
            log.warning("closing a weight update that a failed push left open")
            self._updating = False
            self.llm.finish_weight_update()
        self.llm.start_weight_update()
        self._updating = True

    def _update(self, info: dict[str, Any]) -> None:
        try:
            self.llm.update_weights({"update_info": info})
        except BaseException:
            self._updating = False  # vLLM's workers end the session when an update fails
            raise

    def finish_update(self, version: int) -> None:
        self._updating = False
        self.llm.finish_weight_update()
        if not self.llm.reset_prefix_cache():  # cached KV blocks came from the old weights
            log.warning("vLLM kept its prefix cache after a weight update")
        self.version = int(version)

    def load_weights(self, state_dict: Mapping[str, Any], version: int) -> None:
        """Load a full state (or whole layers of one) in transformers naming, one bucket at a
        time through one staging buffer (vLLM's workers copy each bucket out of it before
        `update_weights` returns)."""
        import torch

        if self.weight_transfer != "ipc":
            raise RuntimeError(
                "this vLLM engine takes weights over NCCL from the learner; build it with "
                "weight_transfer='ipc' to load a state from the object store"
            )
        state = engine_state(state_dict)
        plan = [
            [(k, torch.as_tensor(state[k])) for k in keys]
            for keys in buckets(state, self.bucket_mb)
        ]
        staging = self._staging(max((sum(_nbytes(t) for _, t in b) for b in plan), default=0))
        try:
            self.begin_update()
            for named in plan:
                staging.fill(named)
                self._update(ipc_update_info(named, staging.handle, staging.uuid))
            self.finish_update(version)
        except BaseException:
            if self._updating:  # layers wait on the meta device until the session ends
                self._updating = False
                self.llm.finish_weight_update()
            raise
        finally:
            staging.close()

    # ------------------------------------------------ NCCL from learner rank 0 (collective)
    def init_weight_transfer(self, spec: Any, rank: int) -> None:
        """Join vLLM's NCCL group as weight-group member `rank` (learner rank 0 joins at the
        same time, `trainer_group`); a rebuilt group replaces the previous one."""
        workers = self.llm.get_world_size()
        if workers != spec.vllm_workers:
            raise ValueError(
                f"this vLLM engine has {workers} workers, the weight group counts "
                f"{spec.vllm_workers} (its tensor_parallel_size): collective pushes to vLLM "
                "support tensor parallelism only"
            )
        if self._joined:
            if self._updating:  # vLLM will not shut a group down inside a session
                self._updating = False
                self.llm.finish_weight_update()
            self.llm.shutdown_weight_transfer_engine()
        self.llm.init_weight_transfer_engine({"init_info": nccl_init_info(spec, rank)})
        self._joined = True

    def receive_bucket(self, metas: list[Any]) -> None:
        """One bucket over NCCL, received and loaded by vLLM's workers while learner rank 0
        broadcasts it (`send_bucket`)."""
        self._update(nccl_update_info(metas))
