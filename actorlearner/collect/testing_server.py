"""A real OpenAI-compatible HTTP server that serves scripted replies.

For tests and dry runs of `actorlearner collect` without a GPU: it speaks the same
`/v1/chat/completions` and `/v1/models` protocol as `vllm serve`, and answers from a
JSON script instead of a model:

    {"rules": [{"match": "def add(", "replies": ["...", "..."]}], "default": ["..."]}

The first rule whose `match` (a string, or a list of strings that must all occur)
occurs in the last user message answers; choice i of a
request with seed s is `replies[(s + i) % len(replies)]`, so answers are stateless
and reproducible. Run: `python -m actorlearner.collect.testing_server --script S.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class ScriptedReplies:
    def __init__(self, script: dict):
        self.rules = [(_as_list(r["match"]), list(r["replies"])) for r in script.get("rules", [])]
        self.default = list(script.get("default", ["I cannot help with that."]))

    def answer(self, messages: list[dict], n: int, seed: int) -> list[str]:
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        hit = (r for match, r in self.rules if all(m in last_user for m in match))
        replies = next(hit, self.default)
        return [replies[(seed + i) % len(replies)] for i in range(n)]


def _as_list(match: str | list[str]) -> list[str]:
    return [match] if isinstance(match, str) else list(match)


class _State:
    def __init__(
        self, replies: ScriptedReplies, api_key: str | None, fail_first: int, delay_s: float
    ):
        self.replies = replies
        self.api_key = api_key
        self.fail_left = fail_first
        self.delay_s = delay_s
        self.requests = 0
        self.lock = threading.Lock()


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: tests read stderr
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _gate(self) -> bool:
            if state.api_key and self.headers.get("Authorization") != f"Bearer {state.api_key}":
                self._send(401, {"error": {"message": "invalid API key"}})
                return False
            with state.lock:
                state.requests += 1
                failing = state.fail_left > 0
                state.fail_left -= failing
            if failing:
                self._send(503, {"error": {"message": "scripted outage"}})
                return False
            return True

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/models":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if self._gate():
                self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            length = int(self.headers.get("Content-Length", 0))
            try:
                body = json.loads(self.rfile.read(length))
                messages = body["messages"]
            except (ValueError, KeyError) as exc:
                return self._send(400, {"error": {"message": f"bad request: {exc}"}})
            if not self._gate():
                return
            time.sleep(state.delay_s)
            n, seed = int(body.get("n", 1)), int(body.get("seed") or 0)
            texts = state.replies.answer(messages, n, seed)
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "finish_reason": "stop",
                }
                for i, t in enumerate(texts)
            ]
            self._send(
                200,
                {
                    "id": f"chatcmpl-{state.requests}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "scripted"),
                    "choices": choices,
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                },
            )

    return Handler


def serve(
    script: dict,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    fail_first: int = 0,
    delay_s: float = 0.0,
) -> ThreadingHTTPServer:
    """A bound (not yet serving) server; call `serve_forever()` on it."""
    state = _State(ScriptedReplies(script), api_key, fail_first, delay_s)
    server = ThreadingHTTPServer((host, port), _handler(state))
    server.daemon_threads = True
    return server


@dataclass
class ServerProcess:
    """A scripted server running in its own process."""

    proc: subprocess.Popen
    url: str  # base URL including /v1

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def launch(
    script: dict,
    workdir: str | Path,
    api_key_env: str | None = None,
    fail_first: int = 0,
    delay_s: float = 0.0,
    timeout_s: float = 30.0,
) -> ServerProcess:
    """Start `python -m actorlearner.collect.testing_server` and wait until it listens."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    script_path, port_file = workdir / "script.json", workdir / "port"
    script_path.write_text(json.dumps(script))
    port_file.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "actorlearner.collect.testing_server",
        "--script",
        str(script_path),
    ]
    cmd += ["--port-file", str(port_file), "--fail-first", str(fail_first), "--delay", str(delay_s)]
    if api_key_env:
        cmd += ["--api-key-env", api_key_env]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + timeout_s
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"scripted server did not start (exit code {proc.poll()})")
        time.sleep(0.05)
    return ServerProcess(proc, f"http://127.0.0.1:{port_file.read_text()}/v1")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--script", required=True, help="JSON file of scripted replies")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--api-key-env", help="require the key held in this environment variable")
    p.add_argument("--fail-first", type=int, default=0, help="answer 503 to the first N requests")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each reply")
    args = p.parse_args(argv)
    script = json.loads(Path(args.script).read_text())
    api_key = os.environ[args.api_key_env] if args.api_key_env else None
    server = serve(script, args.host, args.port, api_key, args.fail_first, args.delay)
    port = server.server_address[1]
    if args.port_file:
        tmp = Path(args.port_file).with_suffix(".tmp")
        tmp.write_text(str(port))
        os.replace(tmp, args.port_file)
    print(f"serving scripted replies on http://{args.host}:{port}/v1", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
