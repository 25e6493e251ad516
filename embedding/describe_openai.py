"""The OpenAI-compatible describer: any chat-completions endpoint (vLLM, Ollama, llama.cpp, a hosted API).

Requests run concurrently (a thread pool, as the work is waiting on the server) through the shared chat client
(`embedding.chat.ChatClient`: JSON mode with a fallback, 429, 5xx, timeouts and dropped connections retried by the
shared HTTP policy, Retry-After honoured); a reply that holds no usable JSON is asked for once more; a card that
still fails gets its card-text description, so a batch never fails for one card. Wrong credentials, an unknown
endpoint or model fail every card alike, so they raise DescriberError instead. The API key is sent as a Bearer
token and never logged or shown in repr().

Example image URLs come from Civitai data: the endpoint is handed one only after the same check the image fetcher
makes (crawlers.url_guard: its host resolves to public addresses, or is on ZOO_FETCH_ALLOW_HOSTS), or, with
`inline_images`, only the bytes the fetcher fetched under that check, as data: URIs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from crawlers.url_guard import UrlGuard
from embedding.chat import ChatClient, ChatError, ask_json, is_http_url
from embedding.describe_card import safe_describe_card
from embedding.describe_prompt import LLM_PROMPT_VERSION, SYSTEM_PROMPT, card_prompt, repair
from embedding.description import AdapterCard, DescriberError, Description
from embedding.example_images import image_data_uri, load_image

if TYPE_CHECKING:
    from embedding.image_fetch import ImageFetcher

log = logging.getLogger(__name__)

_FATAL = frozenset({401, 403, 404})


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
        image_fetcher: ImageFetcher | None = None,
        url_guard: UrlGuard | None = None,
        json_mode: bool = True,
        temperature: float = 0.0,
        max_tokens: int = 400,
        invalid_reply_retries: int = 1,
        max_consecutive_failures: int = 8,
    ) -> None:
        """`base_url` is the API root that `/chat/completions` is appended to (e.g. 'http://host:8000/v1').

        `max_images` example images go with each card as image_url parts (0: text only, for text models); with
        `inline_images` they are fetched here through `image_fetcher` and sent as data: URIs (for servers that
        cannot reach the web). Image URLs pass `url_guard` first (default: the fetcher's guard, else one with no
        allow-list).
        After `max_consecutive_failures` cards in a row exhausted their retries, the rest of the batch falls back
        to card text without waiting on a server that is down.
        """
        for option, value in (("max_images", max_images), ("invalid_reply_retries", invalid_reply_retries)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{option} must be an integer >= 0, got {value!r}")
        for option, value in (("concurrency", concurrency), ("max_consecutive_failures", max_consecutive_failures)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be an integer >= 1, got {value!r}")
        self.chat = ChatClient(base_url, model, api_key=api_key, timeout=timeout, max_retries=max_retries,
                               backoff=backoff, max_backoff=max_backoff, json_mode=json_mode,
                               temperature=temperature, max_tokens=max_tokens)
        self.model = self.chat.model
        self.name = f"openai:{self.model}"
        self.url = self.chat.url
        self.concurrency = concurrency
        self.max_images = max_images
        self.inline_images = inline_images
        if inline_images and image_fetcher is None:
            raise ValueError("inline_images needs an image_fetcher to fetch the images with")
        self.image_fetcher = image_fetcher
        self.url_guard = url_guard or (image_fetcher.guard if image_fetcher is not None else UrlGuard())
        self.invalid_reply_retries = invalid_reply_retries
        self.max_consecutive_failures = max_consecutive_failures
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
        try:
            described = ask_json(self._complete, self._messages(card),
                                 lambda reply: repair(reply, card, fallback, self.name),
                                 retries=self.invalid_reply_retries)
        except ChatError as error:
            if error.status in _FATAL:
                raise DescriberError(
                    f"{self.url} answered {error.status} for model {self.model!r}: check the base URL, the model "
                    "name and the API key"
                ) from None
            self._record(ok=False)
            log.warning("describer %s gave up on version %s (%s); using card text", self.name, card.version_id,
                        error)
            return fallback
        if described is None:
            log.warning("describer %s sent no usable JSON for version %s; using card text", self.name,
                        card.version_id)
            return fallback
        return described

    def _complete(self, messages: list[dict[str, Any]]) -> str:
        reply = self.chat.complete(messages)
        self._record(ok=True)
        return reply

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
            if not is_http_url(url):
                continue
            if not self.inline_images and not self.url_guard.allows(url):
                log.debug("describer %s: example image %s not handed on (refused or unresolvable)", self.name, url)
                continue
            if self.inline_images:
                image = load_image(url, fetcher=self.image_fetcher)  # its caps and disk cache
                if image is None:
                    continue
                url = image_data_uri(image)
            parts.append({"type": "image_url", "image_url": {"url": url}})
        return parts

    def _record(self, ok: bool) -> None:
        with self._lock:
            self._consecutive_failures = 0 if ok else self._consecutive_failures + 1
            if self._consecutive_failures == self.max_consecutive_failures:
                log.warning("describer %s: %d cards failed in a row; the rest of this batch uses card text",
                            self.name, self._consecutive_failures)

    def _endpoint_down(self) -> bool:
        with self._lock:
            return self._consecutive_failures >= self.max_consecutive_failures
