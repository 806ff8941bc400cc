"""The teacher client against a real scripted OpenAI-compatible server process."""

from __future__ import annotations

import socket
import time

import pytest

from actorlearner.collect.testing_server import launch
from actorlearner.teacher import (
    ChatRequest,
    TeacherClient,
    TeacherConfig,
    TeacherError,
    TeacherUnreachable,
)

SCRIPT = {
    "rules": [{"match": "add", "replies": ["one", "two", "three"]}],
    "default": ["default reply"],
}
KEY_ENV = "AL_TEST_TEACHER_KEY"
KEY = "sk-test-teacher-5f1c2b9e"


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    srv = launch(SCRIPT, tmp_path / "server", api_key_env=KEY_ENV)
    yield srv
    srv.stop()


def _client(url: str, **kw) -> TeacherClient:
    return TeacherClient(TeacherConfig(base_url=url, model="scripted", api_key_env=KEY_ENV, **kw))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chat_returns_scripted_choices_in_order(server):
    client = _client(server.url)
    assert client.check() == ["scripted"]
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "fix add"}]
    assert client.chat(ChatRequest(msgs, n=4, seed=1)) == ["two", "three", "one", "two"]
    other = [{"role": "user", "content": "something else"}]
    many = client.chat_many([ChatRequest(msgs, n=1), ChatRequest(other, n=2)])
    assert many == [["one"], ["default reply", "default reply"]]


def test_missing_key_is_a_clear_error(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(TeacherError, match=KEY_ENV):
        _client(server.url, max_retries=0).chat(ChatRequest([{"role": "user", "content": "add"}]))


def test_retries_through_transient_outage(tmp_path):
    srv = launch(SCRIPT, tmp_path / "flaky", fail_first=2)
    try:
        client = TeacherClient(TeacherConfig(base_url=srv.url, max_retries=3, backoff_s=0.05))
        assert client.chat(ChatRequest([{"role": "user", "content": "add"}], n=1)) == ["one"]
    finally:
        srv.stop()


def test_outage_longer_than_retries_fails_clearly(tmp_path):
    srv = launch(SCRIPT, tmp_path / "down", fail_first=10)
    try:
        client = TeacherClient(TeacherConfig(base_url=srv.url, max_retries=1, backoff_s=0.01))
        with pytest.raises(TeacherError, match="HTTP 503"):
            client.chat(ChatRequest([{"role": "user", "content": "add"}]))
    finally:
        srv.stop()


def test_unreachable_endpoint_retries_with_backoff_then_explains():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    client = TeacherClient(TeacherConfig(base_url=url, max_retries=3, backoff_s=0.1))
    start = time.monotonic()
    with pytest.raises(TeacherUnreachable) as info:
        client.check()
    elapsed = time.monotonic() - start
    # three backoff sleeps of 0.1, 0.2, 0.4 s (each jittered to at least half)
    assert elapsed >= 0.35
    message = str(info.value)
    assert url in message and "4 attempts" in message and "--teacher-url" in message


def test_key_never_in_repr_or_config(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    client = _client("http://127.0.0.1:1/v1")
    assert KEY not in repr(client) and KEY not in repr(client.config)
    assert client._headers()["Authorization"] == f"Bearer {KEY}"
