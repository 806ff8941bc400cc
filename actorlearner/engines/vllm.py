"""vLLM engine (GPU only, `pip install .[gpu]`, pinned vllm==0.33.0). Untested on CPU.

Kept thin on purpose: generation goes through `vllm.LLM.generate` with token-id
prompts; weights are loaded in place on every vLLM worker through
`LLM.collective_rpc` and a worker extension class (`WeightSyncExtension`), either from
a state dict (object-store path) or from NCCL broadcasts of flat buckets sent by
learner rank 0 (`actorlearner.rollout.weight_sync.NcclWeightSender`).

Logprobs: vLLM is asked for `logprobs_mode="processed_logprobs"`, i.e. log_softmax of
the logits after temperature (greedy: the raw logits). That is our contract when no
top-k/top-p truncation is applied; with truncation vLLM renormalises over the kept
tokens, so the engine warns and marks `Generation.extra["truncated_logprobs"]`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from actorlearner.engines import sampling as sampler
from actorlearner.engines.base import Generation, SamplingParams

log = logging.getLogger(__name__)
EXTENSION = "actorlearner.engines.vllm.WeightSyncExtension"


class WeightSyncExtension:
    """Mixed into every vLLM worker (vLLM's `worker_extension_cls`); `self` is the worker."""

    def load_state(self, state: Mapping[str, Any]) -> int:
        """Load (name, tensor) pairs with the model's own weight loader (handles fused qkv)."""
        self.model_runner.model.load_weights(weights=list(state.items()))  # type: ignore[attr-defined]
        return len(state)

    def init_weight_sync(self, host: str, port: int, rank_offset: int, world_size: int) -> None:
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.parallel_state import get_world_group
        from vllm.distributed.utils import StatelessProcessGroup

        rank = get_world_group().rank + rank_offset
        group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
        self._weight_comm = PyNcclCommunicator(group, device=self.device)  # type: ignore[attr-defined]

    def receive_buckets(self, plan: list) -> int:
        import torch

        from actorlearner.rollout.weight_sync import empty_flat, unpack

        stream = torch.cuda.current_stream()
        for bucket in plan:
            flat = empty_flat(bucket, self.device)  # type: ignore[attr-defined]
            self._weight_comm.broadcast(flat, src=0, stream=stream)
            stream.synchronize()
            self.model_runner.model.load_weights(weights=unpack(bucket, flat))  # type: ignore[attr-defined]
        return len(plan)


class VLLMEngine:
    """The `Engine` interface over `vllm.LLM` (one GPU or a tensor-parallel group)."""

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.5,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        version: int = 0,
        **llm_kwargs: Any,
    ):
        try:
            import vllm
        except ImportError as exc:
            raise ImportError(
                "the vLLM engine needs the GPU extra: pip install 'actorlearner[gpu]' (vllm==0.33.0); "
                "on CPU machines use engine='hf'"
            ) from exc
        from actorlearner.models import check_model_path, load_tokenizer

        path = check_model_path(model_path)
        self.llm = vllm.LLM(
            model=path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching,
            seed=seed,
            logprobs_mode="processed_logprobs",
            worker_extension_cls=EXTENSION,
            **llm_kwargs,
        )
        self.tokenizer = load_tokenizer(path)
        self.version = version
        self.max_positions = self.llm.llm_engine.model_config.max_model_len
        self._warned = False

    def _params(self, sampling: SamplingParams) -> Any:
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
            seed=sampling.seed,
        )

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        from vllm.inputs import TokensPrompt

        sampler.validate(sampling)
        truncated = sampling.temperature > 0 and (sampling.top_k > 0 or sampling.top_p < 1.0)
        if truncated and not self._warned:
            log.warning("vLLM logprobs with top-k/top-p are over the truncated distribution")
            self._warned = True
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts],
            self._params(sampling),
            use_tqdm=False,
        )
        gens = []
        for out in outputs:
            seq = out.outputs[0]
            ids = list(seq.token_ids)
            lps = [step[t].logprob for step, t in zip(seq.logprobs, ids, strict=True)]
            stopped = bool(ids) and ids[-1] in sampling.stop_token_ids
            extra = {"truncated_logprobs": True} if truncated else {}
            gens.append(Generation(ids, lps, "stop" if stopped else "length", extra))
        return gens

    def load_weights(self, state_dict: Mapping[str, Any], version: int) -> None:
        """Load a full (or partial) state in transformers naming on every worker, in place.
        LoRA adapters: merge them into the weights on the learner before sending."""
        if any(".lora_" in k for k in state_dict):
            raise ValueError("the vLLM engine loads merged weights; merge the LoRA adapter first")
        state = {k.removeprefix("module."): v for k, v in state_dict.items()}
        self.llm.collective_rpc("load_state", args=(state,))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        self.version = int(version)

    # NCCL path (learner rank 0 sends with NcclWeightSender)
    def init_weight_sync(self, host: str, port: int, rank_offset: int, world_size: int) -> None:
        self.llm.collective_rpc("init_weight_sync", args=(host, port, rank_offset, world_size))

    def receive_weights(self, plan: list, version: int) -> None:
        self.llm.collective_rpc("receive_buckets", args=(plan,))
        self.llm.reset_prefix_cache()
        self.version = int(version)
