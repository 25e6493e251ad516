"""embedding.chat, the one OpenAI-compatible chat client and reply helpers, against the describer tests' local fake
chat server (real sockets). The describer and the instruction parser tests cover the client through their callers;
these cover what only the client does."""

from __future__ import annotations

import json
import logging
import time

import pytest
import requests

from embedding.chat import ChatClient, ChatError, ask_json, first_json_object, reply_text
from test_describers import Answer, FakeOpenAI, Seen, chat
from test_downloads import Sleeps

SECRET = "sk-chat-SECRET-42"


def client(fake: FakeOpenAI, sleeps: Sleeps, **options) -> ChatClient:
    return ChatClient(fake.base_url, "tiny-chat", **{"api_key": SECRET, "backoff": 0.01, "max_backoff": 0.5,
                                                    "timeout": 5.0, "sleep": sleeps, **options})


def test_content_parts_are_joined_and_a_non_completion_reads_as_empty() -> None:
    parts = [{"type": "text", "text": '{"a": '}, {"type": "image_url", "image_url": {"url": "x"}},
             {"type": "text", "text": "1}"}]
    replies = {1: Answer(200, {"choices": [{"message": {"role": "assistant", "content": parts}}]}),
               2: Answer(200, "<html>gateway page</html>")}
    with FakeOpenAI(lambda seen: replies[seen.number]) as fake:
        sleeps = Sleeps()
        chat_client = client(fake, sleeps)
        assert chat_client([{"role": "user", "content": "hi"}]) == '{"a": 1}'
        assert chat_client.complete([{"role": "user", "content": "hi"}]) == ""
    assert sleeps == []


def test_json_mode_is_dropped_only_once_a_request_without_it_succeeds() -> None:
    def refuses_everything(seen: Seen) -> Answer:
        return Answer(400, {"error": "bad request"})

    with FakeOpenAI(refuses_everything) as fake:
        chat_client = client(fake, Sleeps())
        with pytest.raises(ChatError) as caught:
            chat_client.complete([{"role": "user", "content": "x"}])
    assert caught.value.status == 400
    assert ["response_format" in s.body for s in fake.seen] == [True, False]  # asked again without it, not retried
    assert chat_client.json_mode is True  # the 400 was not about response_format


def test_retry_after_is_honoured_capped_by_max_backoff_and_the_key_stays_secret(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answers = {1: Answer(429, {"error": "slow down"}, {"Retry-After": "120"}), 2: Answer(503, "busy")}
    with FakeOpenAI(lambda seen: answers.get(seen.number, chat('{"ok": true}'))) as fake:
        sleeps = Sleeps()
        chat_client = client(fake, sleeps)
        assert chat_client.complete([{"role": "user", "content": "x"}]) == '{"ok": true}'
        answers.update({4: Answer(500, "down"), 5: Answer(500, "down"), 6: Answer(500, "down")})
        with pytest.raises(ChatError) as caught:
            chat_client.complete([{"role": "user", "content": "x"}])
    assert sleeps[0] == 0.5 and 0.005 <= sleeps[1] <= 0.02  # Retry-After capped; then the jittered backoff
    assert "gave up after 3 attempts" in str(caught.value) and caught.value.status is None
    assert all(s.headers["Authorization"] == f"Bearer {SECRET}" for s in fake.seen)
    assert SECRET not in repr(chat_client) and SECRET not in str(caught.value) and SECRET not in caplog.text


def test_an_unresolvable_host_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)  # requests.post reads proxies from the environment
    sleeps = Sleeps()
    chat_client = ChatClient("http://zoo-chat-test.invalid/v1", "m", max_retries=6, sleep=sleeps)
    started = time.monotonic()
    with pytest.raises(ChatError, match="cannot resolve"):
        chat_client.complete([{"role": "user", "content": "x"}])
    assert time.monotonic() - started < 1.0 and sleeps == []


def test_ask_json_asks_again_with_the_note_until_the_hook_accepts() -> None:
    sent: list[list[dict]] = []
    replies = iter(["no json", '```json\n{"kind": 7}\n```', '{"kind": 1}'])

    def backend(messages: list[dict]) -> str:
        sent.append(messages)
        return next(replies)

    def valid(reply: str) -> int | None:
        data = first_json_object(reply)
        return data["kind"] if data and data.get("kind") in (1, 2) else None

    note = {"role": "user", "content": "JSON only, please."}
    question = [{"role": "user", "content": "q"}]
    assert ask_json(backend, question, valid, retries=2, note=note) == 1
    assert sent == [question, [*question, note], [*question, note]]
    assert ask_json(lambda m: "never", question, valid, retries=1) is None


def test_reply_text_of_a_real_response() -> None:
    with FakeOpenAI(lambda seen: chat(json.dumps({"a": [1, 2]}))) as fake:
        response = requests.post(fake.base_url + "/chat/completions", json={"messages": []}, timeout=5)
    assert first_json_object(reply_text(response)) == {"a": [1, 2]}
