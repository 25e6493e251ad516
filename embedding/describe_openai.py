"""The OpenAI-compatible describer: any chat-completions endpoint (vLLM, Ollama, llama.cpp, a hosted API).

Requests run concurrently (a thread pool, as the work is waiting on the server). Each card's request is retried
with jittered exponential backoff on 429, 5xx, timeouts and dropped connections (Retry-After honoured); a reply
that holds no usable JSON is asked for once more; a card that still fails gets its card-text description, so a
batch never fails for one card. Wrong credentials, an unknown endpoint or model fail every card alike, so they
raise DescriberError instead. The API key is sent as a Bearer token and never logged or shown in repr().
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from embedding.describe_card import safe_describe_card
from embedding.describe_prompt import LLM_PROMPT_VERSION, SYSTEM_PROMPT, card_prompt, repair
from embedding.description import AdapterCard, DescriberError, Description
from embedding.example_images import image_data_uri, load_image

log = logging.getLogger(__name__)

_RETRYABLE = frozenset({408, 409, 425, 429})
_FATAL = frozenset({401, 403, 404})


def _is_http_url(url: object) -> bool:
    return isinstance(url, str) and url.lower().startswith(("http://", "https://"))


def _reply_content(response: requests.Response) -> str | None:
    """The assistant message's text from a chat-completions response, or None when the body is not one."""
    try:
        payload = response.json()
        content = payload["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(part.get("text", "") for part in content
                          if isinstance(part, dict) and isinstance(part.get("text"), str))
    return content if isinstance(content, str) else None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None  # absent, or an HTTP date: use our own backoff
    return seconds if seconds >= 0 else None


class OpenAICompatibleDescriber:
    """Describes cards with a chat model behind an OpenAI-compatible `/chat/completions` endpoint."""

    prompt_version = LLM_PROMPT_VERSION

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        concurrency: int = 4,
        max_images: int = 0,
        inline_images: bool = False,
        json_mode: bool = True,
        temperature: float = 0.0,
        max_tokens: int = 400,
        invalid_reply_retries: int = 1,
        max_consecutive_failures: int = 8,
    ) -> None:
        """`base_url` is the API root that `/chat/completions` is appended to (e.g. 'http://host:8000/v1').

        `max_images` example images go with each card as image_url parts (0: text only, for text models); with
        `inline_images` they are fetched here and sent as data: URIs (for servers that cannot reach the web).
        After `max_consecutive_failures` cards in a row exhausted their retries, the rest of the batch falls back
        to card text without waiting on a server that is down.
        """
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must name the served model, e.g. 'Qwen/Qwen2.5-VL-7B-Instruct'")
        if not _is_http_url(base_url):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        for option, value in (("timeout", timeout), ("backoff", backoff), ("max_backoff", max_backoff)):
            if not value >= 0:
                raise ValueError(f"{option} must be >= 0, got {value!r}")
        for option, value in (("max_retries", max_retries), ("max_images", max_images),
                              ("invalid_reply_retries", invalid_reply_retries)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{option} must be an integer >= 0, got {value!r}")
        for option, value in (("concurrency", concurrency), ("max_tokens", max_tokens),
                              ("max_consecutive_failures", max_consecutive_failures)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be an integer >= 1, got {value!r}")
        self.model = model.strip()
        self.name = f"openai:{self.model}"
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.concurrency = concurrency
        self.max_images = max_images
        self.inline_images = inline_images
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.invalid_reply_retries = invalid_reply_retries
        self.max_consecutive_failures = max_consecutive_failures
        self._json_mode = json_mode
        self._lock = threading.Lock()
        self._consecutive_failures = 0

    def __repr__(self) -> str:
        return f"OpenAICompatibleDescriber(model={self.model!r}, url={self.url!r})"  # never the key

    def describe(self, cards: Sequence[AdapterCard]) -> list[Description]:
        """One description per card, in order; up to `concurrency` requests in flight."""
        self._consecutive_failures = 0
        if not cards:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(cards))) as pool:
            futures = [pool.submit(self._describe_one, card) for card in cards]
            try:
                return [future.result() for future in futures]
            except DescriberError:
                pool.shutdown(cancel_futures=True)
                raise

    def _describe_one(self, card: AdapterCard) -> Description:
        fallback = safe_describe_card(card)
        try:
            return self._ask(card, fallback)
        except DescriberError:
            raise
        except Exception:  # a card whose content breaks request building must not fail the batch
            log.warning("describer %s failed on version %s", self.name, card.version_id, exc_info=True)
            return fallback

    def _ask(self, card: AdapterCard, fallback: Description) -> Description:
        if self._endpoint_down():
            return fallback
        messages = self._messages(card)
        with requests.Session() as session:
            for _ in range(self.invalid_reply_retries + 1):
                reply = self._complete(session, messages)
                if reply is None:
                    self._record(ok=False)
                    log.warning("describer %s gave up on version %s; using card text", self.name, card.version_id)
                    return fallback
                self._record(ok=True)
                described = repair(reply, card, fallback, self.name)
                if described is not None:
                    return described
        log.warning("describer %s sent no usable JSON for version %s; using card text", self.name, card.version_id)
        return fallback

    def _messages(self, card: AdapterCard) -> list[dict[str, Any]]:
        text = card_prompt(card)
        images = self._image_parts(card)
        content: str | list[dict[str, Any]] = [{"type": "text", "text": text}, *images] if images else text
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]

    def _image_parts(self, card: AdapterCard) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        for url in card.example_image_urls[: self.max_images * 2]:  # some may fail to load when inlined
            if len(parts) == self.max_images:
                break
            if not _is_http_url(url):
                continue
            if self.inline_images:
                image = load_image(url)  # the shared ImageFetcher: its caps and disk cache
                if image is None:
                    continue
                url = image_data_uri(image)
            parts.append({"type": "image_url", "image_url": {"url": url}})
        return parts

    def _complete(self, session: requests.Session, messages: list[dict[str, Any]]) -> str | None:
        """The reply text; None once retries are exhausted or the server refuses this card (other 4xx)."""
        use_json = self._json_mode
        attempt = 0
        while True:
            body: dict[str, Any] = {"model": self.model, "messages": messages,
                                    "temperature": self.temperature, "max_tokens": self.max_tokens}
            if use_json:
                body["response_format"] = {"type": "json_object"}
            wait: float | None = None
            try:
                response = session.post(self.url, json=body, headers=self._headers, timeout=self.timeout)
            except (requests.Timeout, requests.ConnectionError) as error:
                log.info("describer %s: %s (attempt %d)", self.name, type(error).__name__, attempt + 1)
            else:
                status = response.status_code
                if status == 200:
                    if not use_json and self._json_mode:
                        self._json_mode = False  # the server rejects response_format: stop sending it
                    return _reply_content(response) or ""
                if status == 400 and use_json:
                    log.info("describer %s: 400 with response_format; retrying without it", self.name)
                    use_json = False
                    continue
                if status in _FATAL:
                    raise DescriberError(
                        f"{self.url} answered {status} for model {self.model!r}: check the base URL, the model "
                        "name and the API key"
                    )
                if status not in _RETRYABLE and status < 500:
                    log.warning("describer %s: the server refused the request (%d)", self.name, status)
                    return None
                log.info("describer %s: HTTP %d (attempt %d)", self.name, status, attempt + 1)
                wait = _retry_after(response)
            if attempt >= self.max_retries:
                return None
            time.sleep(self._delay(attempt, wait))
            attempt += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        return min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)

    def _record(self, ok: bool) -> None:
        with self._lock:
            self._consecutive_failures = 0 if ok else self._consecutive_failures + 1
            if self._consecutive_failures == self.max_consecutive_failures:
                log.warning("describer %s: %d cards failed in a row; the rest of this batch uses card text",
                            self.name, self._consecutive_failures)

    def _endpoint_down(self) -> bool:
        with self._lock:
            return self._consecutive_failures >= self.max_consecutive_failures
