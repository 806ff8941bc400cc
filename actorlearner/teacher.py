"""A small client for OpenAI-compatible chat endpoints (`vllm serve`, hosted APIs).

The API key is read from the environment variable whose *name* is configured, at
request time: it is never stored on the client, in configs, logs or datasets.
Transient failures (connection errors, timeouts, 429, 5xx) are retried with
exponential backoff; a concurrency limit bounds requests in flight.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

Messages = list[dict[str, str]]
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class TeacherConfig:
    base_url: str = "http://127.0.0.1:8000/v1"  # up to and including the /v1 prefix
    model: str = "teacher"
    api_key_env: str | None = "OPENAI_API_KEY"  # name of the variable, never the key itself
    timeout_s: float = 120.0
    max_retries: int = 5  # retries after the first attempt
    backoff_s: float = 0.5  # first retry delay; doubles each retry (with jitter)
    backoff_max_s: float = 20.0
    concurrency: int = 8  # requests in flight per client


class TeacherError(RuntimeError):
    """The endpoint answered, but not with a usable completion (after retries)."""


class TeacherUnreachable(TeacherError):
    """No answer from the endpoint at all (after retries)."""


@dataclass(frozen=True)
class ChatRequest:
    messages: Messages
    n: int = 1
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None


class TeacherClient:
    """Blocking chat-completions client, thread-safe, with a bounded number of requests in flight."""

    def __init__(self, config: TeacherConfig, api_key: str | None = None):
        """`api_key` (e.g. handed over from a driver process) wins over the environment."""
        self.config = config
        self._key = api_key
        self._url = config.base_url.rstrip("/")
        self._slots = threading.BoundedSemaphore(max(1, config.concurrency))

    def __repr__(self) -> str:  # never shows the key
        return f"TeacherClient(url={self._url!r}, model={self.config.model!r})"

    # -- public API -------------------------------------------------------------------
    def chat(self, request: ChatRequest) -> list[str]:
        """The `request.n` completion texts for one conversation (topped up if the server gives fewer)."""
        texts: list[str] = []
        attempt = 0
        while len(texts) < request.n:
            body = {
                "model": self.config.model,
                "messages": request.messages,
                "n": request.n - len(texts),
                "temperature": request.temperature,
                "top_p": request.top_p,
                "max_tokens": request.max_tokens,
            }
            if request.seed is not None:
                body["seed"] = request.seed + attempt
            reply = self._post("/chat/completions", body)
            choices = reply.get("choices") or []
            if not choices:
                raise TeacherError(
                    f"{self._url}/chat/completions returned no choices: {reply!r:.300}"
                )
            texts.extend((c.get("message") or {}).get("content") or "" for c in choices)
            attempt += 1
        return texts[: request.n]

    def chat_many(self, requests: Sequence[ChatRequest]) -> list[list[str]]:
        """Run many requests concurrently (at most `concurrency` in flight); results in order."""
        if not requests:
            return []
        workers = min(len(requests), max(1, self.config.concurrency))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self.chat, requests))

    def check(self) -> list[str]:
        """Fail fast with a clear error if the endpoint is unreachable; returns the served model ids."""
        reply = self._request("GET", "/models", None)
        return [m.get("id", "") for m in reply.get("data", [])]

    # -- HTTP ---------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        name = self.config.api_key_env
        key = self._key or (os.environ.get(name) if name else None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, path: str, body: dict) -> dict:
        return self._request("POST", path, json.dumps(body).encode())

    def _request(self, method: str, path: str, data: bytes | None) -> dict:
        cfg = self.config
        url = self._url + path
        last = ""
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                delay = min(cfg.backoff_max_s, cfg.backoff_s * 2 ** (attempt - 1))
                time.sleep(delay * (0.5 + random.random() / 2))
            req = urllib.request.Request(url, data=data, method=method, headers=self._headers())
            try:
                with self._slots, urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:
                    return json.loads(resp.read().decode())
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:300]
                if exc.code not in _RETRY_STATUS:
                    raise TeacherError(_http_hint(url, exc.code, detail, cfg)) from None
                last = f"HTTP {exc.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            except json.JSONDecodeError as exc:
                raise TeacherError(f"{url} did not return JSON ({exc})") from None
        if last.startswith("HTTP "):
            raise TeacherError(f"{url} kept failing after {cfg.max_retries + 1} attempts: {last}")
        raise TeacherUnreachable(
            f"teacher endpoint {url} is unreachable after {cfg.max_retries + 1} attempts "
            f"({last}). Start the server (e.g. `vllm serve <model> --port 8000`) or point "
            "--teacher-url at a running OpenAI-compatible endpoint."
        )


def api_key_from_env(config: TeacherConfig) -> str | None:
    """The key as this process sees it (for handing to worker processes, never to storage)."""
    return os.environ.get(config.api_key_env) if config.api_key_env else None


def _http_hint(url: str, code: int, detail: str, cfg: TeacherConfig) -> str:
    hint = ""
    if code in (401, 403):
        hint = (
            f" Set the API key in the environment variable {cfg.api_key_env!r}"
            " (or configure api_key_env to the variable that holds it)."
        )
    elif code == 404:
        hint = f" Check the base URL (it should end in /v1) and the model name {cfg.model!r}."
    return f"{url} answered HTTP {code}: {detail}.{hint}"
