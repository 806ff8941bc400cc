"""The trained module: a causal LM (optionally LoRA-wrapped) plus a linear value head.

The value head reads the LM's last hidden state, as in the LeDex paper. The reference
policy for the KL penalty is the same model with adapters disabled when LoRA is on
(no second copy), or a frozen copy of the initial model for full fine-tuning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from actorlearner.learner.config import LearnerConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class PolicyWithValue(nn.Module):
    lm: Any  # an HF causal LM or a PEFT wrapper around one (dynamic attributes)

    def __init__(self, lm: nn.Module, hidden_size: int, use_lora: bool):
        super().__init__()
        self.lm = lm
        self.use_lora = use_lora
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.value_head.weight, std=1.0 / (hidden_size + 1))
        nn.init.zeros_(self.value_head.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, with_values: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T, V] and values [B, T] (value of the state after reading token t)."""
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=with_values,
            use_cache=False,
        )
        if not with_values:
            return out.logits, None
        hidden = out.hidden_states[-1]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return out.logits, values

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """Run as the reference policy (LoRA only)."""
        with self.lm.disable_adapter():
            yield


def load_lm(cfg: LearnerConfig) -> Any:
    from transformers import AutoModelForCausalLM

    if not cfg.model:
        raise ValueError("LearnerConfig.model is empty: set it to an HF model directory or name")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype {cfg.dtype!r} unknown; choose one of {sorted(DTYPES)}")
    return AutoModelForCausalLM.from_pretrained(cfg.model, dtype=DTYPES[cfg.dtype])


def build_policy(cfg: LearnerConfig) -> tuple[PolicyWithValue, nn.Module | None]:
    """(policy, frozen reference or None when LoRA provides the reference)."""
    torch.manual_seed(cfg.seed)  # identical value head (and LoRA init) on every rank
    lm: Any = load_lm(cfg)
    hidden = lm.config.hidden_size
    reference = None
    if cfg.use_lora:
        from peft import LoraConfig, get_peft_model

        check_lora_targets(lm, cfg.lora.target_modules)
        lora = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules),
            task_type="CAUSAL_LM",
        )
        lm = get_peft_model(lm, lora)
    else:
        reference = load_lm(cfg).eval().requires_grad_(False)
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable()
        if cfg.use_lora:  # frozen embeddings: give checkpointed blocks an input that needs grad
            lm.enable_input_require_grads()
    policy = PolicyWithValue(lm, hidden, cfg.use_lora)
    return policy, reference


def check_lora_targets(lm: nn.Module, targets: list[str]) -> None:
    """Fail in one line when a LoRA target names no layer of this architecture.

    PEFT matches a target against the end of each module name; names differ between
    families (Llama/Qwen2 `q_proj`, GPTBigCode `c_attn`), so a recipe's list is checked
    against the model it will wrap, before PEFT raises deep inside `get_peft_model`.
    """
    names = [n for n, _ in lm.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rpartition(".")[2] for n, m in lm.named_modules() if _is_linear(m)})
        raise ValueError(
            f"LoRA target modules {missing} match no layer of {type(lm).__name__}; "
            f"set model.lora.target_modules from its linear layers: {', '.join(linear)}"
        )


def _is_linear(module: nn.Module) -> bool:
    # GPTBigCode and GPT-2 style models use transformers' Conv1D, which LoRA also wraps
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


@torch.no_grad()
def greedy_continuation(
    policy: PolicyWithValue, prompt: list[int], max_new_tokens: int, device: Any = "cpu"
) -> tuple[list[int], list[float]]:
    """Greedy tokens and their logprobs from the policy itself (full forwards, no cache):
    the reference an inference engine holding the exported weights must reproduce.
    Under ZeRO-3 every rank must call it with the same arguments (forwards are collective)."""
    was_training = policy.training
    policy.eval()
    ids = torch.tensor([prompt], device=device)
    tokens: list[int] = []
    logps: list[float] = []
    for _ in range(max_new_tokens):
        logits, _ = policy(ids, torch.ones_like(ids), with_values=False)
        logp = torch.log_softmax(logits[0, -1].float(), dim=-1)
        token = int(logp.argmax())
        tokens.append(token)
        logps.append(float(logp[token]))
        ids = torch.cat([ids, ids.new_tensor([[token]])], dim=1)
    policy.train(was_training)
    return tokens, logps


def target_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """log p(input_ids[:, j+1] | prefix) under log_softmax(logits / T): [B, T-1]."""
    logp = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def base_lm(policy: PolicyWithValue) -> Any:
    """The plain HF model (unwrapped from PEFT)."""
    return policy.lm.get_base_model() if policy.use_lora else policy.lm
