"""One multi-turn episode kept in token space, and the map from reply characters to tokens.

The conversation's ids are only ever extended: the prompt ids, then each reply's
sampled ids exactly as generated, then the ids of the next user turn. Nothing is
decoded and re-encoded, so the learner scores exactly the tokens the policy sampled.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from actorlearner.chat import user_turn_suffix
from actorlearner.engines.base import Generation
from actorlearner.trajectory import Trajectory, sampled_versions


class ReplyText:
    """The decoded text of one reply and the character end of each of its token prefixes.

    A character belongs to the token that completes it: a prefix that ends inside a
    multi-byte character decodes to a replacement char, which is not part of the final
    text, so that prefix's end stops before the character.
    """

    def __init__(self, tokenizer: Any, ids: Sequence[int]):
        self.tokenizer = tokenizer
        self.ids = list(ids)
        self.text = self._decode(self.ids)
        self._ends: dict[int, int] = {}

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(
            list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def char_end(self, i: int) -> int:
        """Characters of the final text covered by tokens [0, i]."""
        if i not in self._ends:
            prefix = self._decode(self.ids[: i + 1])
            if self.text.startswith(prefix):
                self._ends[i] = len(prefix)
            else:  # partial character (or cleanup) at the end of the prefix
                n = 0
                for a, b in zip(prefix, self.text, strict=False):
                    if a != b:
                        break
                    n += 1
                self._ends[i] = n
        return self._ends[i]

    def token_at_char_end(self, end: int) -> int:
        """Index of the token that completes the character span ending (exclusive) at `end`."""
        if not self.ids:
            raise ValueError("empty reply has no tokens")
        end = max(1, min(end, len(self.text)))
        idx = bisect.bisect_left(range(len(self.ids)), end, key=self.char_end)
        return min(idx, len(self.ids) - 1)


class EpisodeBuilder:
    """Accumulates one episode's token ids, old logprobs, versions, action mask and rewards."""

    def __init__(self, prompt_ids: Sequence[int], task_id: str = "", version: int = 0):
        self.ids = list(prompt_ids)
        self.logprobs = [0.0] * len(self.ids)
        self.mask = [0] * len(self.ids)
        self.rewards = [0.0] * len(self.ids)
        self.turn_ends: list[int] = []
        self.reward_terms: dict[str, float] = {}
        self.task_id = task_id
        self.versions = [int(version)] * len(self.ids)  # the version that sampled each token
        self.prompt_tokens = len(self.ids)
        self.stats: dict[str, Any] = {"turns": 0, "truncated_replies": 0}
        self.pending: list[tuple[ReplyText, int, int, Future]] = []  # rewards still computing

    def add_reply(self, gen: Generation, im_end_id: int, version: int) -> int:
        """Append a reply's sampled ids (mask 1); return the index of its first token."""
        if not gen.token_ids:
            raise ValueError("engine returned an empty reply; max_new_tokens must be >= 1")
        start = len(self.ids)
        self.ids += gen.token_ids
        self.logprobs += gen.logprobs
        self.mask += [1] * len(gen.token_ids)
        self.rewards += [0.0] * len(gen.token_ids)
        self.turn_ends.append(len(self.ids) - 1)
        self.versions += [int(version)] * len(gen.token_ids)
        self.stats["turns"] += 1
        if gen.finish_reason != "stop":
            # The reply hit the length limit without closing its turn. Close it with
            # <|im_end|> so the next turn has the chat layout the model knows; the policy
            # did not sample this token, so it is not an action (mask 0, logprob 0).
            self.stats["truncated_replies"] += 1
            self._append_context([im_end_id])
        return start

    def add_user_turn(self, tokenizer: Any, content: str) -> None:
        """Append the next user turn (the env's feedback) and the assistant header."""
        ids = tokenizer(user_turn_suffix(content), add_special_tokens=False)["input_ids"]
        self._append_context(ids)

    def _append_context(self, ids: Sequence[int]) -> None:
        self.versions += [self.versions[-1]] * len(ids)
        self.ids += list(ids)
        self.logprobs += [0.0] * len(ids)
        self.mask += [0] * len(ids)
        self.rewards += [0.0] * len(ids)

    def defer_rewards(self, reply: ReplyText, reply_start: int, pending: Future) -> None:
        """Place the last reply's rewards once `pending` (the env's Future of its reward
        and parts, see CodeRefineEnv `defer_rewards`) is done; see `settle`."""
        self.pending.append((reply, reply_start, len(self.turn_ends) - 1, pending))

    def settled(self) -> bool:
        return all(f.done() for *_, f in self.pending)

    def settle(self) -> None:
        """Place every deferred reward (waiting for those still computing)."""
        for reply, start, turn, pending in self.pending:
            parts = pending.result()
            self.place_rewards(reply, start, parts["reward"], parts, turn=turn)
        self.pending = []

    def place_rewards(
        self,
        reply: ReplyText,
        reply_start: int,
        reward: float,
        info: Mapping[str, Any],
        turn: int = -1,
    ) -> dict[str, int]:
        """Put the env's span rewards on the tokens that end each span; return the positions.

        "explanation"/"code" rewards go to the last token of that character span,
        "turn" to the reply's last generated token. Whatever part of the scalar step
        reward the spans do not account for also goes to the turn's last token, so the
        trajectory's rewards always sum to the env's rewards. `turn`: the reply's index
        (default: the last reply).
        """
        turn_end = self.turn_ends[turn]  # the last generated token (the stop token if emitted)
        spans = info.get("spans") or {}
        by_span = dict(info.get("rewards_by_span") or {})
        positions: dict[str, int] = {}
        placed = 0.0
        for name, value in by_span.items():
            span = spans.get(name)
            if name == "turn" or not span or span[1] <= span[0]:  # absent part: turn end
                pos = turn_end
            else:
                pos = reply_start + reply.token_at_char_end(int(span[1]))
            self.rewards[pos] += float(value)
            positions[name] = pos
            placed += float(value)
        rest = float(reward) - placed
        if abs(rest) > 1e-9:
            self.rewards[turn_end] += rest
        for name, value in (info.get("reward_terms") or {}).items():
            self.reward_terms[name] = self.reward_terms.get(name, 0.0) + float(value)
        return positions

    def build(self, **stats: Any) -> Trajectory:
        gen_tokens = sum(self.mask)
        self.stats.update(
            prompt_tokens=self.prompt_tokens,
            generated_tokens=gen_tokens,
            total_tokens=len(self.ids),
        )
        self.stats.update(stats)
        sampled = sampled_versions(self.versions, self.mask)
        if len(sampled) > 1:
            self.stats["policy_versions"] = sampled
        return Trajectory(
            token_ids=self.ids,
            logprobs=self.logprobs,
            action_mask=self.mask,
            rewards=self.rewards,
            turn_ends=self.turn_ends,
            reward_terms=self.reward_terms,
            policy_version=sampled[0] if sampled else self.versions[0],
            task_id=self.task_id,
            stats=self.stats,
            versions=self.versions,
        )
