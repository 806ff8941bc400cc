"""vLLM engine (GPU only, `pip install .[gpu]`, pinned vllm==0.33.0). Never ran here (no GPU).

Generation goes through `vllm.LLM.generate` with token-id prompts, one seed per request.

Weights go through vLLM's own RL weight-update path (`weight_transfer_config`, then
`start_weight_update` / `update_weights` / `finish_weight_update`, as in vLLM's
`examples/rl`), with the CUDA IPC backend: the rollout actor and its engine core share
the actor's GPU, so the actor copies one bucket of the new weights onto that GPU,
sends vLLM only IPC handles (pickled, as vLLM's HTTP client does), and frees the bucket
before the next. Tensors never travel inside an RPC argument: vLLM's engine core runs in
a child process, and its msgpack decoder does not rebuild tensors from RPC arguments.

Weights from a learner on other GPUs (`rollout.weight_sync: collective`): the engine is
built with vLLM's NCCL weight-transfer backend; learner rank 0 joins vLLM's NCCL group
as its rank 0 (`NCCLWeightTransferEngine.trainer_init`) and the engine's workers as the
next ranks (`init_weight_transfer_engine`, `rank_offset`). A push is one weight-update
session (`start_weight_update`, then `update_weights` with NCCL update info once per
bucket, packed, while rank 0 broadcasts that bucket with `trainer_send_weights`, then
`finish_weight_update`), as in vLLM's `examples/rl/rlhf_nccl.py`. The bucket metadata
reaches the actor through the weight group (`actorlearner.rollout.collective`). Never ran
here (no GPU, vLLM not installed): written against vLLM's `nccl_engine.py` and its RL
example as read from its sources; the 0.33.0 wheel's exact signatures were not checked.

Logprobs: vLLM is asked for `logprobs_mode="processed_logprobs"`, i.e. log_softmax of
the logits after temperature (greedy: the raw logits). That is our contract when no
top-k/top-p truncation is applied; with truncation vLLM renormalises over the kept
tokens, so the engine warns and marks `Generation.extra["truncated_logprobs"]`.
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


def buckets(state: Mapping[str, Any], bucket_mb: float) -> Iterator[list[str]]:
    """Key groups of at most ~bucket_mb each, in order (a larger tensor goes alone)."""
    limit, size = bucket_mb * 2**20, 0.0
    bucket: list[str] = []
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > limit:
            yield bucket
            bucket, size = [], 0.0
        bucket.append(key)
        size += nbytes
    if bucket:
        yield bucket


def ipc_update_info(named: list[tuple[str, Any]], gpu_uuid: str) -> dict[str, Any]:
    """vLLM's IPC `update_info` for tensors on this GPU: names, dtypes, shapes and CUDA IPC
    handles keyed by the GPU's UUID, pickled (`ipc_handles_pickled`) so that the RPC to a
    multiprocess engine core carries only a string."""
    from torch.multiprocessing.reductions import reduce_tensor

    handles = [{gpu_uuid: reduce_tensor(t)} for _, t in named]
    return {
        "names": [n for n, _ in named],
        "dtype_names": [str(t.dtype).removeprefix("torch.") for _, t in named],
        "shapes": [list(t.shape) for _, t in named],
        "ipc_handles_pickled": base64.b64encode(pickle.dumps(handles)).decode("ascii"),
    }


def nccl_update_info(metas: list[Any], bucket_bytes: int) -> dict[str, Any]:
    """vLLM's NCCL `update_info` for one bucket, packed into one buffer of the bucket's size
    (the trainer side packs it with the same size, so both cut it the same way)."""
    return {
        "names": [m.name for m in metas],
        "dtype_names": [m.dtype for m in metas],
        "shapes": [list(m.shape) for m in metas],
        "packed": True,
        "packed_buffer_size_bytes": bucket_bytes,
        "packed_num_buffers": 1,
    }


def _bucket_bytes(metas: list[Any]) -> int:
    import torch

    return max(1, sum(m.numel * torch.empty(0, dtype=m.torch_dtype).element_size() for m in metas))


def trainer_group(spec: Any) -> Any:
    """Learner rank 0's end of vLLM's NCCL weight-transfer group (rank 0 of
    1 + actors x workers). Needs vLLM on the learner's machine (the gpu extra)."""
    from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferEngine

    world = 1 + (spec.world_size - 1) * spec.vllm_workers
    return NCCLWeightTransferEngine.trainer_init(
        {"master_address": spec.address, "master_port": spec.vllm_port, "world_size": world}
    )


def send_bucket(group: Any, metas: list[Any], flat: Any) -> None:
    """Broadcast one bucket to every engine's workers (they run `update_weights` meanwhile)."""
    from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferEngine

    from actorlearner.rollout.collective import unpack

    NCCLWeightTransferEngine.trainer_send_weights(
        iter(unpack(metas, flat)),
        {
            "group": group,
            "packed": True,
            "packed_buffer_size_bytes": _bucket_bytes(metas),
            "packed_num_buffers": 1,
        },
    )


class VLLMEngine:
    """The `Engine` interface over `vllm.LLM` (one GPU: the rollout actor's)."""

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
        try:
            import vllm
            from vllm.config import WeightTransferConfig
        except ImportError as exc:
            raise ImportError(
                "the vLLM engine needs the GPU extra: pip install 'actorlearner[gpu]' (vllm==0.33.0); "
                "on CPU machines use engine='hf'"
            ) from exc
        from actorlearner.models import check_model_path, load_tokenizer

        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # pickled IPC handles
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
        if weight_transfer == "ipc":
            self.llm.init_weight_transfer_engine({"init_info": {}})
        self.weight_transfer = weight_transfer
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
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
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
        truncated = sampling.temperature > 0 and (sampling.top_k > 0 or sampling.top_p < 1.0)
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

    def load_weights(self, state_dict: Mapping[str, Any], version: int) -> None:
        """Load a full (or partial) state in transformers naming, one bucket at a time,
        through vLLM's weight-update session (CUDA IPC to the engine core on this GPU)."""
        import torch

        if self.weight_transfer != "ipc":
            raise RuntimeError(
                "this vLLM engine takes weights over NCCL from the learner; build it with "
                "weight_transfer='ipc' to load a state from the object store"
            )
        state = engine_state(state_dict)
        device = torch.device("cuda", torch.cuda.current_device())
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        self.llm.start_weight_update()
        for keys in buckets(state, self.bucket_mb):
            named = [(k, torch.as_tensor(state[k]).to(device).contiguous()) for k in keys]
            self.llm.update_weights({"update_info": ipc_update_info(named, uuid)})
            del named  # the engine core has copied them into its own weights
        self.llm.finish_weight_update()
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        self.version = int(version)

    # ------------------------------------------------ NCCL from learner rank 0 (collective)
    def init_weight_transfer(self, spec: Any, rank: int) -> None:
        """Join vLLM's NCCL group: this engine's workers are ranks after learner rank 0 and
        the engines of actors before this one (`rank`: this actor's rank in the weight group)."""
        world = 1 + (spec.world_size - 1) * spec.vllm_workers
        self.llm.init_weight_transfer_engine(
            {
                "init_info": {
                    "master_address": spec.address,
                    "master_port": spec.vllm_port,
                    "rank_offset": 1 + (rank - 1) * spec.vllm_workers,
                    "world_size": world,
                }
            }
        )

    def begin_update(self) -> None:
        self.llm.start_weight_update()

    def receive_bucket(self, metas: list[Any]) -> None:
        """One bucket over NCCL, received and loaded by vLLM's workers while learner rank 0
        broadcasts it (`send_bucket`)."""
        self.llm.update_weights({"update_info": nccl_update_info(metas, _bucket_bytes(metas))})

    def finish_update(self, version: int) -> None:
        self.llm.finish_weight_update()
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        self.version = int(version)
