"""One OpenAI-compatible chat client and one way to get validated JSON out of a chat model.

Used by the OpenAI-compatible describer (`embedding.describe_openai`) and the edit-instruction parser
(`serving.studio.instructions`), so both talk to vLLM, Ollama, llama.cpp or a hosted API the same way:

- `ChatClient` POSTs `{base_url}/chat/completions`. JSON mode (`response_format`) is asked for; when the server
  answers 400 the same request goes again without it, and once such a request succeeds JSON mode is dropped for
  good. 429, 5xx, timeouts and dropped connections are retried through the shared HTTP retry policy
  (`crawlers.http_retry`: Retry-After honoured, capped by `max_backoff`; a host that does not resolve fails at
  once). Whatever cannot be answered raises `ChatError`, with the HTTP status when the server refused. The API key
  goes in the Authorization header only: never in logs, errors or repr().
- `reply_text` reads the assistant's text from a completion (content parts joined), `first_json_object` finds the
  JSON object in it (code fences and prose around it ignored), and `ask_json` asks, validates the reply with the
  caller's repair hook, and asks again while the reply holds nothing usable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import requests

from crawlers.http_retry import (
    RETRYABLE_STATUS,
    NameResolutionFailed,
    RetriesExhausted,
    RetryPolicy,
    raise_for_retryable_status,
)
from embedding.describe_prompt import first_json_object

__all__ = ["CHAT_RETRYABLE_STATUS", "ChatBackend", "ChatClient", "ChatError", "ask_json", "first_json_object",
           "is_http_url", "reply_text"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Messages = list[dict[str, Any]]
ChatBackend = Callable[[Messages], str]  # messages -> the reply's text (ChatClient, a local model, a test double)
CHAT_RETRYABLE_STATUS = RETRYABLE_STATUS | {409}  # some inference servers answer 409 while a model is busy


class ChatError(RuntimeError):
    """The endpoint could not answer: refused (`status` is the HTTP status), unreachable, or retries ran out."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def is_http_url(url: object) -> bool:
    return isinstance(url, str) and url.lower().startswith(("http://", "https://"))


def reply_text(response: requests.Response) -> str:
    """The assistant message's text; '' when the body is not a chat completion (an unusable reply, not an error)."""
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(part.get("text", "") for part in content
                          if isinstance(part, dict) and isinstance(part.get("text"), str))
    return content if isinstance(content, str) else ""


def ask_json(chat: ChatBackend, messages: Messages, validate: Callable[[str], T | None], *, retries: int = 1,
             note: dict[str, Any] | None = None) -> T | None:
    """The first reply `validate` accepts (it returns None for an unusable one), asking up to `retries` more times;
    `note`, when given, is appended to the messages of each repeated ask. None when no reply was usable; the
    backend's errors propagate."""
    for attempt in range(retries + 1):
        reply = chat(messages if attempt == 0 or note is None else [*messages, note])
        result = validate(reply)
        if result is not None:
            return result
    return None


def _check_options(timeout: float, max_retries: int, backoff: float, max_backoff: float, max_tokens: int) -> None:
    for option, value in (("timeout", timeout), ("backoff", backoff), ("max_backoff", max_backoff)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{option} must be a number >= 0, got {value!r}")
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")


class ChatClient:
    """An OpenAI-compatible `/chat/completions` endpoint; calling it with messages returns the reply's text."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 2, backoff: float = 0.5, max_backoff: float = 8.0, json_mode: bool = True,
                 temperature: float = 0.0, max_tokens: int = 300,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`base_url` is the API root that `/chat/completions` is appended to (e.g. 'http://host:8000/v1')."""
        if not is_http_url(base_url):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must name the served model, e.g. 'Qwen/Qwen2.5-VL-7B-Instruct'")
        _check_options(timeout, max_retries, backoff, max_backoff, max_tokens)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model.strip()
        self.timeout, self.temperature, self.max_tokens = timeout, temperature, max_tokens
        self.json_mode = json_mode
        self.policy = RetryPolicy(max_attempts=max_retries + 1, backoff_base=backoff, backoff_cap=max_backoff,
                                  max_retry_after=max_backoff, sleep=sleep)
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def __repr__(self) -> str:
        return f"ChatClient(url={self.url!r}, model={self.model!r})"  # never the key

    def __call__(self, messages: Messages) -> str:
        return self.complete(messages)

    def complete(self, messages: Messages) -> str:
        """The reply's text ('' for a body that is not a completion). Raises ChatError when there is no answer."""
        try:
            return self.policy.call(lambda: self._complete_once(messages), label=f"chat {self.model!r} at {self.url}")
        except (RetriesExhausted, NameResolutionFailed) as failure:
            raise ChatError(f"{self.url}: {failure}") from None
        except requests.RequestException as error:  # not transient (an invalid URL, too many redirects, ...)
            raise ChatError(f"{self.url}: {type(error).__name__}: {error}") from None

    def _complete_once(self, messages: Messages) -> str:
        asked_json = self.json_mode
        response = self._post(messages, asked_json)
        if response.status_code == 400 and asked_json:
            log.info("chat %s: 400 with response_format; asking without it", self.url)
            response = self._post(messages, False)
            if response.status_code == 200:
                self.json_mode = False  # the server does not take response_format: stop sending it
        raise_for_retryable_status(response, CHAT_RETRYABLE_STATUS)
        if response.status_code != 200:
            raise ChatError(f"{self.url} answered HTTP {response.status_code}", response.status_code)
        return reply_text(response)

    def _post(self, messages: Sequence[dict[str, Any]], json_mode: bool) -> requests.Response:
        body: dict[str, Any] = {"model": self.model, "messages": list(messages), "temperature": self.temperature,
                                "max_tokens": self.max_tokens}
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        return requests.post(self.url, json=body, headers=self._headers, timeout=self.timeout)
