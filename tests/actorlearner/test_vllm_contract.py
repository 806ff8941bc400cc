"""The vLLM engine against vllm 0.33.0's API, as read from the 0.33.0 wheel's sources (vLLM
does not install here). A stand-in `vllm` package offers only what 0.33.0 offers, with its
argument names and the fields its weight-transfer payloads take, and its workers keep
0.33.0's session rules; a call 0.33.0 lacks, or a field it does not take, fails a test."""

from __future__ import annotations

import base64
import pickle
import sys
import types
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from actorlearner.engines.base import SamplingParams
from actorlearner.rollout.collective import GroupSpec, TensorMeta

# ------------------------------------------------------------ vllm 0.33.0, as read

BACKENDS = {"nccl", "ipc", "sparse_nccl", "sharded_rdt", "nccl_m2n", "modelexpress"}  # registered
LOGPROBS_MODES = {"raw_logits", "raw_logprobs", "processed_logits", "processed_logprobs"}
# EngineArgs fields the engine may pass to LLM(...) through **kwargs (beside its named ones)
ENGINE_ARGS = {"enable_prefix_caching", "logprobs_mode", "weight_transfer_config", "max_model_len",
               "pipeline_parallel_size", "enforce_eager"}  # fmt: skip
SAMPLING_FIELDS = {
    "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature",
    "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens",
    "min_tokens", "logprobs", "prompt_logprobs", "detokenize", "skip_special_tokens",
    "spaces_between_special_tokens", "include_stop_str_in_output", "logit_bias",
    "allowed_token_ids", "bad_words",
}  # fmt: skip
# (allowed, required) fields of each backend's worker-side init and update info
INIT_FIELDS = {
    "ipc": ({"packed"}, set()),
    "nccl": ({"master_address", "master_port", "rank_offset", "world_size", "nccl_unique_id_b64",
              "packed", "packed_buffer_size_bytes", "packed_num_buffers"},
             {"rank_offset", "world_size"}),
}  # fmt: skip
UPDATE_FIELDS = {
    "ipc": ({"names", "dtype_names", "shapes", "ipc_handles", "ipc_handles_pickled",
             "tensor_sizes"}, {"names", "dtype_names", "shapes"}),
    "nccl": ({"names", "dtype_names", "shapes"}, set()),
}  # fmt: skip
GPU_UUID = "GPU-2f9c1a4e-0000-1111-2222-333344445555"  # str(get_device_properties(i).uuid)


def _fields(kind: str, info: dict, table: dict, backend: str) -> None:
    """What 0.33.0's `parse_*_info` does: the dataclass rejects unknown and missing fields."""
    allowed, required = table[backend]
    if set(info) - allowed or required - set(info):
        raise ValueError(f"Invalid {kind} for {backend}: {sorted(info)}")


class Worker:
    """A 0.33.0 GPU worker's weight-transfer methods (the targets of `collective_rpc`)."""

    def __init__(self, backend: str | None, buffers: dict):
        self.backend, self.buffers = backend, buffers
        self.init: dict | None = None
        self.active = False
        self.loaded: dict[str, torch.Tensor] = {}
        self.received: list[list[str]] = []

    def _engine(self) -> str:
        if self.backend is None:
            raise RuntimeError("Weight transfer not configured.")
        return self.backend

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        _fields("init_info", init_info, INIT_FIELDS, self._engine())
        if self.backend == "nccl":
            tcp = "master_address" in init_info and "master_port" in init_info
            assert tcp != ("nccl_unique_id_b64" in init_info), "one rendezvous mode"
        self.init = init_info

    def shutdown_weight_transfer_engine(self) -> None:
        if self.active:
            raise RuntimeError("Cannot release a trainer connection during a weight update")
        self.init = None

    def start_weight_update(self) -> None:
        self._engine()
        if self.active:
            raise RuntimeError("start_weight_update called while a weight update is active")
        self.active = True

    def update_weights(self, update_info: dict) -> None:
        if not self.active:
            raise RuntimeError("start_weight_update must be called before update_weights.")
        try:
            _fields("update_info", update_info, UPDATE_FIELDS, self._engine())
            if self.backend == "ipc":
                self._receive_ipc(dict(update_info))
            else:
                assert self.init is not None, "NCCL weight transfer not initialized"
                self.received.append(list(update_info["names"]))
        except BaseException:
            self.active = False
            raise

    def _receive_ipc(self, info: dict) -> None:
        import os

        packed = bool(self.init and self.init.get("packed"))
        if "ipc_handles_pickled" in info:
            if not int(os.environ.get("VLLM_ALLOW_INSECURE_SERIALIZATION", "0")):
                raise ValueError("Refusing to deserialize `ipc_handles_pickled`")
            info["ipc_handles"] = pickle.loads(base64.b64decode(info.pop("ipc_handles_pickled")))
        assert packed, "one handle per bucket needs packed=True at init"
        assert isinstance(info["ipc_handles"], dict) and info["tensor_sizes"] is not None
        args = list(info["ipc_handles"][GPU_UUID])  # keyed by this worker's GPU UUID
        buffer = self.buffers[args[0]]  # stands in for rebuild_cuda_tensor(*args)
        sizes = info["tensor_sizes"]
        parts = buffer[: sum(sizes)].split(sizes)
        for name, shape, dtype, part in zip(
            info["names"], info["shapes"], info["dtype_names"], parts, strict=True
        ):  # the packed consumer: raw bytes -> dtype -> shape, copied out
            self.loaded[name] = part.view(getattr(torch, dtype)).view(shape).clone()

    def finish_weight_update(self) -> None:
        if not self.active:
            raise RuntimeError("finish_weight_update called without a matching start")
        self.active = False


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class LLM:
    """0.33.0's `vllm.LLM`, cut to what the engine may use. The weight-transfer methods are
    0.33.0's RL mixin: each is one `collective_rpc` to the worker method of that name."""

    last: LLM

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, dtype: str = "auto",
                 seed: int = 0, gpu_memory_utilization: float = 0.92, **kwargs: Any):  # fmt: skip
        assert not set(kwargs) - ENGINE_ARGS, (
            f"not an EngineArgs field: {set(kwargs) - ENGINE_ARGS}"
        )
        assert kwargs.get("logprobs_mode", "raw_logprobs") in LOGPROBS_MODES
        config = kwargs.get("weight_transfer_config")
        backend = config if config is None or isinstance(config, str) else config.backend
        self.kwargs = dict(kwargs, model=model, dtype=dtype, seed=seed,
                           gpu_memory_utilization=gpu_memory_utilization)  # fmt: skip
        self.buffers: dict = {}
        n = tensor_parallel_size * kwargs.get("pipeline_parallel_size", 1)
        self.workers = [Worker(backend, self.buffers) for _ in range(n)]
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=64))
        self.model_config = self.llm_engine.model_config
        self.rpcs: list[tuple[str, dict]] = []
        self.prefix_resets = 0
        LLM.last = self

    def collective_rpc(self, method: Any, timeout: float | None = None, args: tuple = (),
                       kwargs: dict | None = None) -> list:  # fmt: skip
        self.rpcs.append((method, dict(kwargs or {})))
        return [getattr(w, method)(*args, **(kwargs or {})) for w in self.workers]

    def init_weight_transfer_engine(self, request: Any) -> None:
        info = request["init_info"] if isinstance(request, dict) else request.init_info
        self.collective_rpc("init_weight_transfer_engine", kwargs={"init_info": info})

    def shutdown_weight_transfer_engine(self) -> None:
        self.collective_rpc("shutdown_weight_transfer_engine")

    def start_weight_update(self) -> None:
        self.collective_rpc("start_weight_update")

    def update_weights(self, request: Any) -> None:
        info = request["update_info"] if isinstance(request, dict) else request.update_info
        self.collective_rpc("update_weights", kwargs={"update_info": info})

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.collective_rpc("finish_weight_update")

    def get_world_size(self, include_dp: bool = True) -> int:
        return len(self.workers)

    def reset_prefix_cache(self, reset_running_requests: bool = False,
                           reset_connector: bool = False) -> bool:  # fmt: skip
        self.prefix_resets += 1
        return True

    def generate(self, prompts: Any, sampling_params: Any = None, *, use_tqdm: Any = True,
                 lora_request: Any = None, priority: Any = None,
                 tokenization_kwargs: Any = None, mm_processor_kwargs: Any = None) -> list:  # fmt: skip
        """Replies 7, 8, ... up to max_tokens or a stop id; logprobs as 0.33.0 returns them
        for logprobs=0 (one {token id: Logprob} dict per token)."""
        assert len(prompts) == len(sampling_params)
        out = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            assert set(prompt) == {"prompt_token_ids"}
            ids: list[int] = []
            for t in range(7, 7 + params.max_tokens):
                ids.append(t)
                if t in params.stop_token_ids:
                    break
            lps = [{t: Logprob(-0.1 * t, rank=1)} for t in ids]
            seq = SimpleNamespace(token_ids=ids, logprobs=lps, finish_reason="length")
            out.append(SimpleNamespace(outputs=[seq], prompt_token_ids=prompt["prompt_token_ids"]))
        return out


class VSamplingParams:
    """0.33.0's `SamplingParams`: its field names, and the checks it makes on ours."""

    top_k: int = 0
    top_p: float = 1.0
    temperature: float = 1.0
    logprobs: int | None = None

    def __init__(self, **kwargs: Any):
        unknown = set(kwargs) - SAMPLING_FIELDS
        if unknown:
            raise TypeError(f"SamplingParams has no field {unknown}")
        self.__dict__.update(kwargs)
        assert self.top_k >= -1 and 0 < self.top_p <= 1 and 0 <= self.temperature <= 2
        assert self.temperature == 0 or self.temperature >= 0.01  # else vLLM raises it
        assert self.logprobs is None or self.logprobs >= -1


@dataclass
class WeightTransferConfig:
    backend: str = "nccl"

    def __post_init__(self):
        assert self.backend in BACKENDS


def TokensPrompt(**kwargs: Any) -> dict:  # noqa: N802 - a TypedDict in vLLM
    assert set(kwargs) <= {"prompt_token_ids", "prompt", "token_type_ids"}
    return dict(kwargs)


class Communicator:
    """vLLM's PyNcclCommunicator as learner rank 0 sees it."""

    def __init__(self, init_info: dict, rank: int):
        self.init_info, self.rank = init_info, rank
        self.device = torch.device("cpu")
        self.sent: list[tuple[str, torch.Tensor]] = []
        self.packing: list[tuple[int, int]] = []
        self.destroyed = False

    def destroy(self) -> None:
        self.destroyed = True


def trainer_init(init_info: Any, rank: int = 0) -> Communicator:
    assert isinstance(init_info, dict)
    assert {"master_address", "master_port", "world_size"} <= set(init_info)
    return Communicator(init_info, rank)


def packed_nccl_broadcast_producer(iterator: Any, group: Any, src: int, post_iter_func: Any,
                                   buffer_size_bytes: int = 1 << 30,
                                   num_buffers: int = 2) -> None:  # fmt: skip
    assert src == 0
    for item in iterator:
        group.sent.append((item[0], post_iter_func(item).clone()))
    group.packing.append((buffer_size_bytes, num_buffers))


@pytest.fixture
def fake_vllm(monkeypatch):
    """Installs the stand-in as `vllm` (and the submodules the engine imports)."""
    modules = {
        "vllm": {"LLM": LLM, "SamplingParams": VSamplingParams},
        "vllm.config": {"WeightTransferConfig": WeightTransferConfig},
        "vllm.inputs": {"TokensPrompt": TokensPrompt},
        "vllm.distributed": {},
        "vllm.distributed.weight_transfer": {},
        "vllm.distributed.weight_transfer.nccl_common": {"trainer_init": trainer_init},
        "vllm.distributed.weight_transfer.packed_tensor": {
            "packed_nccl_broadcast_producer": packed_nccl_broadcast_producer
        },
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delenv("VLLM_ALLOW_INSECURE_SERIALIZATION", raising=False)
    return LLM


class CpuStaging:
    """`IpcStaging` on the CPU: the worker stand-in finds the buffer by its handle."""

    def __init__(self, nbytes: int):
        from actorlearner.engines.vllm import pack

        self.buffer = torch.empty(max(nbytes, 1), dtype=torch.uint8)
        self.handle = (f"buffer-{id(self)}", 1, 2, 3, 4, 5, 0)  # [6]: the device index
        self.uuid = GPU_UUID
        self._pack = pack
        LLM.last.buffers[self.handle[0]] = self.buffer
        self.closed = False

    def fill(self, named):
        self._pack(self.buffer, named)

    def close(self):
        self.closed = True


def _engine(tiny_model_dir, **kwargs):
    from actorlearner.engines.vllm import VLLMEngine

    engine = VLLMEngine(str(tiny_model_dir), seed=3, **kwargs)
    engine._staging = CpuStaging
    return engine, LLM.last


# ------------------------------------------------------------ the engine against it


def test_engine_builds_llm_with_0_33_arguments(fake_vllm, tiny_model_dir):
    import os

    engine, llm = _engine(tiny_model_dir, gpu_memory_utilization=0.4)
    assert llm.kwargs["logprobs_mode"] == "processed_logprobs"
    assert llm.kwargs["weight_transfer_config"].backend == "ipc"
    assert llm.kwargs["gpu_memory_utilization"] == 0.4 and llm.kwargs["seed"] == 3
    assert engine.max_positions == 64
    # IPC: packed transfers declared once, and pickled handles allowed in the engine core
    assert llm.rpcs == [("init_weight_transfer_engine", {"init_info": {"packed": True}})]
    assert os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] == "1"
    with pytest.raises(ValueError, match="CUDA IPC weight loads reach one GPU"):
        _engine(tiny_model_dir, tensor_parallel_size=2)


def test_generate_passes_0_33_sampling_fields_and_reads_logprobs(fake_vllm, tiny_model_dir):
    engine, _ = _engine(tiny_model_dir)
    sp = SamplingParams(max_new_tokens=5, temperature=0.7, seed=1, stop_token_ids=(9,))
    gens = engine.generate([[1, 2], [3]], sp)
    assert [g.token_ids for g in gens] == [[7, 8, 9]] * 2
    assert gens[0].logprobs == pytest.approx([-0.7, -0.8, -0.9])
    assert [g.finish_reason for g in gens] == ["stop", "stop"]
    assert engine.generate([[1]], SamplingParams(max_new_tokens=2))[0].finish_reason == "length"
    params = engine._params(SamplingParams(max_new_tokens=4, top_k=0), 5)
    assert (params.top_k, params.logprobs, params.detokenize, params.seed) == (0, 0, False, 5)
    for bad in (0.005, 2.5):  # vLLM would raise 0.005 to 0.01 and rejects 2.5
        with pytest.raises(ValueError, match="outside what vLLM samples with"):
            engine.generate([[1]], SamplingParams(temperature=bad))


def test_ipc_load_is_one_session_of_packed_buckets_the_worker_rebuilds(fake_vllm, tiny_model_dir):
    engine, llm = _engine(tiny_model_dir, bucket_mb=100 / 2**20)  # 100-byte buckets
    state = {
        "lm.model.a.weight": torch.randn(4, 5),  # 80 bytes
        "lm.model.b.weight": torch.randn(3, dtype=torch.bfloat16),
        "lm.model.c.weight": torch.arange(30, dtype=torch.float32),  # 120: alone
        "v_head.weight": torch.ones(2),  # not the engine's
    }
    llm.rpcs.clear()
    engine.load_weights(state, version=4)
    assert [m for m, _ in llm.rpcs] == ["start_weight_update"] + ["update_weights"] * 2 + [
        "finish_weight_update"
    ]
    info = llm.rpcs[1][1]["update_info"]
    assert all(isinstance(v, list | str) for v in info.values())  # nothing but strings, lists
    assert info["tensor_sizes"] == [80, 6]
    for worker in llm.workers:
        assert set(worker.loaded) == {"model.a.weight", "model.b.weight", "model.c.weight"}
        for key, value in state.items():
            if not key.startswith("v_head"):
                assert torch.equal(worker.loaded[key.removeprefix("lm.")], value)
    assert engine.version == 4 and llm.prefix_resets == 1


def test_a_failed_load_or_push_does_not_leave_vllms_session_open(fake_vllm, tiny_model_dir):
    engine, llm = _engine(tiny_model_dir)

    class Broken(CpuStaging):
        def fill(self, named):
            raise RuntimeError("copy failed")

    engine._staging = Broken
    with pytest.raises(RuntimeError, match="copy failed"):
        engine.load_weights({"a.weight": torch.ones(2)}, version=1)
    assert not llm.workers[0].active and engine.version == 0  # no layer left on meta
    engine.begin_update()  # a push that died between buckets: 0.33.0 refuses a 2nd start
    engine._staging = CpuStaging
    engine.load_weights({"a.weight": torch.ones(2)}, version=2)
    assert engine.version == 2 and not llm.workers[0].active


def test_nccl_engine_joins_with_rank_offset_and_receives_bucket_metadata(fake_vllm, tiny_model_dir):
    engine, llm = _engine(tiny_model_dir, weight_transfer="nccl", tensor_parallel_size=2)
    assert llm.rpcs == []  # nothing before the group exists
    spec = GroupSpec("10.0.0.1", 1234, world_size=3, backend="gloo", generation=1,
                     vllm_port=4321, vllm_workers=2)  # fmt: skip
    engine.init_weight_transfer(spec, rank=2)  # the second actor: workers 3 and 4 of 5
    metas = [TensorMeta("a.weight", "bfloat16", (4, 8)), TensorMeta("b.bias", "bfloat16", (8,))]
    engine.begin_update()
    engine.receive_bucket(metas)
    engine.finish_update(7)
    assert [m for m, _ in llm.rpcs] == [
        "init_weight_transfer_engine",
        "start_weight_update",
        "update_weights",
        "finish_weight_update",
    ]
    init = llm.rpcs[0][1]["init_info"]
    assert init == {"master_address": "10.0.0.1", "master_port": 4321, "rank_offset": 3,
                    "world_size": 5, "packed": True, "packed_buffer_size_bytes": 1 << 30,
                    "packed_num_buffers": 2}  # fmt: skip
    assert llm.rpcs[2][1]["update_info"] == {
        "names": ["a.weight", "b.bias"],
        "dtype_names": ["bfloat16", "bfloat16"],
        "shapes": [[4, 8], [8]],
    }
    assert [w.received for w in llm.workers] == [[["a.weight", "b.bias"]]] * 2
    assert engine.version == 7 and llm.prefix_resets == 1
    with pytest.raises(RuntimeError, match="over NCCL"):
        engine.load_weights({}, version=8)


def test_nccl_rejoin_shuts_the_old_group_down_and_counts_workers(fake_vllm, tiny_model_dir):
    engine, llm = _engine(tiny_model_dir, weight_transfer="nccl")
    spec = GroupSpec("h", 1, world_size=2, backend="gloo", generation=1, vllm_port=2)
    engine.init_weight_transfer(spec, rank=1)
    engine.begin_update()  # a push that failed midway leaves the session open
    engine.init_weight_transfer(dataclasses_replace(spec, generation=2), rank=1)
    assert [m for m, _ in llm.rpcs][-3:] == [
        "finish_weight_update",
        "shutdown_weight_transfer_engine",
        "init_weight_transfer_engine",
    ]
    with pytest.raises(ValueError, match="has 1 workers, the weight group counts 2"):
        engine.init_weight_transfer(dataclasses_replace(spec, vllm_workers=2), rank=1)


def dataclasses_replace(spec: GroupSpec, **changes: Any) -> GroupSpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)


def test_learner_rank0_opens_rank_0_and_broadcasts_with_the_workers_packing(fake_vllm):
    from actorlearner.engines.vllm import NCCL_PACKING, send_bucket, trainer_group
    from actorlearner.rollout.collective import buckets

    spec = GroupSpec("10.0.0.1", 1234, world_size=3, backend="gloo", generation=1,
                     vllm_port=4321, vllm_workers=2)  # fmt: skip
    group = trainer_group(spec)
    assert group.rank == 0
    assert group.init_info == {"master_address": "10.0.0.1", "master_port": 4321, "world_size": 5}
    named = [("a", torch.randn(2, 3)), ("b", torch.randn(4))]
    [(metas, flat)] = list(buckets(iter(named), 1 << 20))
    send_bucket(group, metas, flat)
    assert [n for n, _ in group.sent] == ["a", "b"]
    for (_, want), (_, got) in zip(named, group.sent, strict=True):
        assert torch.equal(want, got)
    # the workers cut each bucket with the settings their init info carried
    assert group.packing == [
        (NCCL_PACKING["packed_buffer_size_bytes"], NCCL_PACKING["packed_num_buffers"])
    ]


def test_the_stand_in_refuses_what_0_33_refuses(fake_vllm, tiny_model_dir):
    """The stand-in is strict where 0.33.0 is: a sync `LLM` method it lacks, per-update
    packing fields on NCCL, unwrapped payloads, a second start."""
    engine, llm = _engine(tiny_model_dir, weight_transfer="nccl")
    assert not hasattr(llm, "trainer_send_weights")
    with pytest.raises(KeyError):
        llm.init_weight_transfer_engine({"master_port": 1})  # not wrapped in "init_info"
    llm.init_weight_transfer_engine({"init_info": {"master_address": "h", "master_port": 1,
                                                   "rank_offset": 1, "world_size": 2}})  # fmt: skip
    llm.start_weight_update()
    with pytest.raises(RuntimeError, match="while a weight update is active"):
        llm.start_weight_update()
    with pytest.raises(ValueError, match="Invalid update_info"):
        llm.update_weights({"update_info": {"names": [], "dtype_names": [], "shapes": [],
                                            "packed": True}})  # fmt: skip
