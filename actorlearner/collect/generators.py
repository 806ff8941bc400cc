"""The two kinds of model collection talks to, behind one `complete(requests)` call:
the policy (an engine from `actorlearner.engines`, token ids in and out) and a
teacher behind an OpenAI-compatible endpoint."""

from __future__ import annotations

from typing import Protocol

from actorlearner.teacher import ChatRequest, TeacherClient, TeacherConfig


class ChatModel(Protocol):
    label: str  # recorded in provenance and per record

    def complete(self, requests: list[ChatRequest]) -> list[list[str]]:
        """`request.n` reply texts per request, in order."""
        ...


class TeacherModel:
    def __init__(self, config: TeacherConfig, api_key: str | None = None):
        self.client = TeacherClient(config, api_key)
        self.label = f"teacher:{config.model}"

    def complete(self, requests: list[ChatRequest]) -> list[list[str]]:
        return self.client.chat_many(requests)


class PolicyModel:
    """Chat completions from a local policy through the engine interface.

    All requests of one call share a single batched `generate` with the first request's
    sampling settings and seed (one unit of work is one batch, so the same unit gives
    the same replies whichever worker runs it). Prompts too long for the model get
    empty replies (counted in `too_long`).
    """

    def __init__(self, path: str, engine: str = "hf", dtype: str = "auto", max_batch: int = 64):
        from actorlearner.engines import make_engine
        from actorlearner.models import load_tokenizer, stop_token_ids

        self.engine = make_engine(engine, path, dtype=dtype)
        self.tokenizer = load_tokenizer(path)
        self.stop_ids = stop_token_ids(self.tokenizer)
        self.max_positions = getattr(self.engine, "max_positions", None)
        self.max_batch = max_batch
        self.label = f"policy:{path}"
        self.too_long = 0  # prompts skipped because they do not fit the model

    def _encode(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer.encode(text, add_special_tokens=False)

    def complete(self, requests: list[ChatRequest]) -> list[list[str]]:
        from actorlearner.engines.base import SamplingParams

        if not requests:
            return []
        first = requests[0]
        sampling = SamplingParams(
            max_new_tokens=first.max_tokens,
            temperature=first.temperature,
            top_p=first.top_p,
            stop_token_ids=self.stop_ids,
            seed=first.seed,
        )
        rows: list[tuple[int, list[int]]] = []
        for i, req in enumerate(requests):
            ids = self._encode(req.messages)
            if self.max_positions and len(ids) + sampling.max_new_tokens > self.max_positions:
                self.too_long += req.n
                continue
            rows += [(i, ids)] * req.n
        out: list[list[str]] = [[] for _ in requests]
        for start in range(0, len(rows), self.max_batch):
            chunk = rows[start : start + self.max_batch]
            gens = self.engine.generate([ids for _, ids in chunk], sampling)
            for (i, _), gen in zip(chunk, gens, strict=True):
                out[i].append(str(self.tokenizer.decode(gen.token_ids, skip_special_tokens=True)))
        for i, req in enumerate(requests):
            out[i] += [""] * (req.n - len(out[i]))
        return out
