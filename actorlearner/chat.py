"""The chat format every model in the project uses (ChatML-style turns).

Kept in one place so the base model's tokenizer, SFT data, rollouts and
evaluation all agree on the exact token layout of a conversation.
"""

from __future__ import annotations

BOS = "<|endoftext|>"
EOS = "<|endoftext|>"
PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [EOS, PAD, IM_START, IM_END]

# Jinja template in the Hugging Face `chat_template` convention.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def render(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """Render messages exactly as CHAT_TEMPLATE does (no Jinja needed)."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def user_turn_suffix(content: str) -> str:
    """Text appended after an assistant reply (which ends in IM_END) to start the next turn."""
    return f"\n{IM_START}user\n{content}{IM_END}\n{IM_START}assistant\n"
