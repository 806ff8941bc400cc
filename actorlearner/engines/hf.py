"""Hugging Face transformers engine (CPU and CUDA) with its own KV-cached decoding loop.

Why not `model.generate`: rollouts need the exact logprob of every sampled token under
log_softmax(logits / temperature), and rows that have emitted a stop token should
stop costing compute. The loop below left-pads the prompts, prefills once, then
decodes one token per step and drops finished rows from the batch and the KV cache.
The cache is written in place (kv_cache.py), on CPU with the values transposed for the
decoding attention (decode_attention.py); with `reuse_prefixes` a multi-turn prompt
prefills only what follows the states kept from its last turn, and new episodes share
the prefill of their common start (prefix_cache.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from actorlearner.engines import sampling as sampler
from actorlearner.engines.base import Generation, SamplingParams
from actorlearner.engines.decode_attention import use_decode_attention
from actorlearner.engines.kv_cache import compact_order, growing_cache
from actorlearner.engines.prefix_cache import (
    PrefixCache,
    cached_prefill,
    common_start,
    reuse_supported,
    row_kv,
)

# Keys a learner may send along with the policy that an inference engine has no use for.
_IGNORED_PREFIXES = ("v_head.", "value_head.", "score.")
_STRIP_PREFIXES = ("module.", "_orig_mod.")
# New episodes of a batch start alike (system prompt, instructions); a shorter common
# start is not worth its own prefill call.
MIN_SHARED_START = 16


class HFEngine:
    """Batched generation from token ids with a transformers causal LM.

    Build it from a model directory (`HFEngine("path/to/model")`) or from a loaded
    `model` (+ `tokenizer`). With `lora` (PEFT `LoraConfig` keyword arguments, e.g.
    ``{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}``) the model is
    wrapped with a LoRA adapter so that `load_weights` can take adapter states.
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        model: torch.nn.Module | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        dtype: str = "auto",
        device: str = "auto",
        lora: Mapping[str, Any] | None = None,
        prune_finished: bool = True,
        version: int = 0,
        seed: int = 0,
        reuse_prefixes: bool = False,
    ):
        """`reuse_prefixes`: keep each reply's KV states for the next turn's prompt
        (engines with fixed weights, e.g. evaluation; see prefix_cache.py)."""
        if model is None:
            if model_path is None:
                raise ValueError("HFEngine needs a model_path or a loaded model")
            from actorlearner.models import load_model

            model, tokenizer = load_model(model_path, dtype=dtype, device=device)
        # CPU decoding reads values stored transposed (decode_attention.py)
        self.values_transposed = use_decode_attention(model)
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **dict(lora)))
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.prune_finished = prune_finished
        self.version = version
        self.seed = seed  # mixed into seeded calls: actors with one config draw differently
        self.is_lora = lora is not None
        config = getattr(model, "config", None)
        self.max_positions = getattr(config, "max_position_embeddings", None)
        self.pad_id = _pad_id(model, tokenizer)
        self._fwd_kw = _forward_kwargs(model)
        self.prefixes = PrefixCache() if reuse_prefixes else None

    # ----------------------------------------------------------------- generation
    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        """Sample one continuation per prompt; rows leave the batch as soon as they stop."""
        sampler.validate(sampling)
        if not prompts:
            return []
        self._check_prompts(prompts, sampling.max_new_tokens)
        gen = None
        if sampling.seed is not None:
            seed = sampler.mix_seed(sampling.seed, self.seed) if self.seed else sampling.seed
            gen = torch.Generator(device=self.device).manual_seed(seed)
        stops = torch.tensor(sampling.stop_token_ids or [-1], device=self.device)

        ids, mask = self._left_pad(prompts)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache, first = self._prefill_cache(prompts, mask, sampling.max_new_tokens)
        out = self.model(
            input_ids=ids[:, first:],
            attention_mask=mask,
            position_ids=positions[:, first:],
            **self._fwd_kw(cache),
        )
        logits = out.logits[:, -1]
        rows = torch.arange(len(prompts), device=self.device)  # original index of each live row
        last_pos = positions[:, -1]
        tokens: list[list[int]] = [[] for _ in prompts]
        logps: list[list[float]] = [[] for _ in prompts]
        finish = ["length"] * len(prompts)

        alive = torch.ones(len(prompts), dtype=torch.bool, device=self.device)
        for step in range(sampling.max_new_tokens):
            next_ids, next_lp = sampler.select(logits, sampling, gen)
            live = zip(
                rows.tolist(), next_ids.tolist(), next_lp.tolist(), alive.tolist(), strict=True
            )
            for r, t, lp, a in live:
                if a:
                    tokens[r].append(t)
                    logps[r].append(lp)
            done = torch.isin(next_ids, stops) & alive
            for r in rows[done].tolist():
                finish[r] = "stop"
            alive = alive & ~done
            last = step == sampling.max_new_tokens - 1
            if self.prefixes is not None:
                kept = done | alive if last else done
                self._keep(cache, rows, kept, prompts, tokens, ids.shape[1])
            if last or not bool(alive.any()):
                break
            if self.prune_finished and not bool(alive.all()):
                idx = compact_order(alive)
                cache.batch_select_indices(idx)
                rows, next_ids, mask, last_pos = rows[idx], next_ids[idx], mask[idx], last_pos[idx]
                alive = alive[idx]
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            last_pos = last_pos + 1
            out = self.model(
                input_ids=next_ids[:, None],
                attention_mask=mask,
                position_ids=last_pos[:, None],
                **self._fwd_kw(cache),
            )
            logits = out.logits[:, -1]
        return [
            Generation(token_ids=t, logprobs=lp, finish_reason=f)
            for t, lp, f in zip(tokens, logps, finish, strict=True)
        ]

    def _prefill_cache(
        self, prompts: list[list[int]], mask: torch.Tensor, max_new: int
    ) -> tuple[Any, int]:
        """The cache the prompts go into and their first column to run: the stored states
        of earlier turns when prefixes are reused, else an empty cache with room for the
        reply (written in place: no whole-cache copy per decoded token)."""
        if self.prefixes is not None:
            self.prefixes.next_call()
            self._share_start(prompts)
            reused = cached_prefill(self.prefixes, prompts, mask, self._new_cache, max_new)
            if reused is not None:
                return reused
        return self._new_cache(max_new), 0

    def _new_cache(self, reserve: int) -> Any:
        config = getattr(self.model, "config", None)
        return growing_cache(config, reserve, transposed_values=self.values_transposed)

    def _share_start(self, prompts: list[list[int]]) -> None:
        """Prefill the start that this call's new episodes share once, for all of them
        (each row then prefills only what follows it)."""
        assert self.prefixes is not None
        fresh = [p for p in prompts if not self.prefixes.covers(p)]
        if len(fresh) < 2 or (n := common_start(fresh)) < MIN_SHARED_START:
            return
        cache = self._new_cache(0)
        self.model(
            input_ids=torch.tensor([fresh[0][:n]], device=self.device),
            position_ids=torch.arange(n, device=self.device)[None],
            **self._fwd_kw(cache),
        )
        if reuse_supported(cache):
            self.prefixes.share(fresh[0][:n], row_kv(cache, 0, 0))

    def _keep(
        self,
        cache: Any,
        rows: torch.Tensor,
        which: torch.Tensor,
        prompts: list[list[int]],
        tokens: list[list[int]],
        width: int,
    ) -> None:
        """Store finished rows' states (prompt and reply but its last token, never fed)
        from their first column in the batch padded to `width`."""
        if self.prefixes is None or not reuse_supported(cache):
            return
        for j in which.nonzero().squeeze(-1).tolist():
            r = int(rows[j])
            start = width - len(prompts[r])
            self.prefixes.put(prompts[r] + tokens[r][:-1], row_kv(cache, j, start))

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _check_prompts(self, prompts: list[list[int]], max_new: int) -> None:
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"prompt {i} is empty; every prompt needs at least one token id")
            if self.max_positions and len(p) + max_new > self.max_positions:
                raise ValueError(
                    f"prompt {i} has {len(p)} tokens + max_new_tokens={max_new} > the model's "
                    f"{self.max_positions} positions; shorten the episode (fewer turns, shorter "
                    "feedback) or lower max_new_tokens"
                )

    # ----------------------------------------------------------------- weights
    @torch.no_grad()
    def load_weights(self, state_dict: Mapping[str, Any], version: int) -> None:
        """Copy new weights in place and record `version`.

        Two kinds of state are accepted:
        - a full or partial model state in the plain transformers naming
          (``model.layers.0.self_attn.q_proj.weight``, ``lm_head.weight``; ``module.``
          prefixes from DeepSpeed/DDP are stripped, value-head keys ignored);
        - a LoRA adapter state as returned by ``peft.get_peft_model_state_dict``
          (keys containing ``lora_A``/``lora_B``), for an engine built with `lora=`.
        """
        if self.prefixes is not None:
            self.prefixes.clear()  # states of the old weights
        state = {_strip(k): v for k, v in state_dict.items()}
        state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
        if any(".lora_" in k for k in state):
            self._load_lora(state)
        else:
            self._load_full(state)
        self.version = int(version)

    @torch.no_grad()
    def load_bucket(self, named: list[tuple[str, torch.Tensor]]) -> None:
        """Copy one bucket of a collective push (full weights, transformers names) in place;
        the version changes once the whole push has arrived (`version` is set by the actor)."""
        self._load_full({_strip(k): v for k, v in named if not k.startswith(_IGNORED_PREFIXES)})

    def fingerprint(self) -> str:
        """A digest of every weight's bytes: equal digests mean bit-equal weights."""
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in sorted(_base(self.model).state_dict().items()):
            digest.update(name.encode())
            digest.update(
                tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            )
        return digest.hexdigest()

    def _load_lora(self, state: dict[str, Any]) -> None:
        if not self.is_lora:
            raise ValueError(
                "got a LoRA adapter state but this engine has no adapter; build it with "
                "lora={...} (the learner's LoraConfig arguments) or send merged full weights"
            )
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.model, state)
        bad = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if bad:
            raise ValueError(f"LoRA keys that match no adapter module: {bad[:5]}")

    def _load_full(self, state: dict[str, Any]) -> None:
        base = _base(self.model)
        # remove_duplicate=False keeps tied aliases such as lm_head.weight addressable
        params: dict[str, torch.Tensor] = dict(base.named_parameters(remove_duplicate=False))
        params.update(dict(base.named_buffers(remove_duplicate=False)))
        unknown = []
        for key, value in state.items():
            target = params.get(key)
            if target is None and self.is_lora:  # PEFT moves wrapped weights under base_layer
                head, _, leaf = key.rpartition(".")
                target = params.get(f"{head}.base_layer.{leaf}")
            if target is None:
                unknown.append(key)
                continue
            value = torch.as_tensor(value)
            if value.shape != target.shape:
                raise ValueError(
                    f"shape mismatch for {key}: got {tuple(value.shape)}, model has {tuple(target.shape)}"
                )
            target.copy_(value.to(device=target.device, dtype=target.dtype))
        if unknown:
            raise ValueError(
                f"{len(unknown)} keys match no model parameter (e.g. {unknown[:3]}); send the "
                "policy's state_dict in transformers naming"
            )


def _strip(key: str) -> str:
    for prefix in _STRIP_PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _base(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _forward_kwargs(model: torch.nn.Module):
    """Cache keyword of this transformers version (`cache` in v5, `past_key_values` before),
    plus `logits_to_keep=1` where supported so the prefill skips logits of prompt tokens."""
    import inspect

    params = inspect.signature(_base(model).forward).parameters
    name = "cache" if "cache" in params else "past_key_values"
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    return lambda cache: {name: cache, "use_cache": True, **extra}


def _pad_id(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase | None) -> int:
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    cfg = getattr(model, "config", None)
    for name in ("pad_token_id", "eos_token_id"):
        val = getattr(cfg, name, None)
        if isinstance(val, int):
            return val
    return 0
