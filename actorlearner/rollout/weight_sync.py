"""Moving policy weights from the learner to the rollout engines.

The learner exports the engine-facing state (transformers names, LoRA merged; see
`actorlearner.learner.export`), which goes through the Ray object store once
(`RolloutGroup.update_weights`); every actor loads it into its engine in place: the HF
engine copies tensors, the vLLM engine moves them onto its GPU bucket by bucket and
hands them to its engine core through vLLM's CUDA IPC weight-update path.
"""

from __future__ import annotations

import torch


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
