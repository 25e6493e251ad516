"""Build the describer, encoders and image fetcher a Settings object asks for (lite or full preset)."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

from config import Settings
from crawlers.url_guard import UrlGuard
from embedding.describers import Describer, make_describer
from embedding.encoders import ImageEncoder, TextEncoder, make_encoders
from embedding.example_images import load_image
from embedding.image_fetch import ImageFetcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelChoice:
    """The model-relevant part of the settings (hashable, so built models can be cached per process)."""

    describer: str
    text_encoder: str
    image_encoder: str
    clip_model: str
    clip_pretrained: str
    describer_base_url: str | None
    describer_model: str | None
    describer_api_key: str | None = field(repr=False)  # a secret: never in a repr or a log line
    vlm_model: str
    cache_dir: str
    images_dir: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelChoice:
        return cls(settings.describer, settings.text_encoder, settings.image_encoder, settings.clip_model,
                   settings.clip_pretrained, settings.describer_base_url, settings.describer_model,
                   settings.describer_api_key, settings.vlm_model, str(settings.zoo_home / "models"),
                   str(settings.zoo_home / "images"))


@lru_cache(maxsize=4)
def build_describer(choice: ModelChoice, allow_hosts: tuple[str, ...] = ()) -> Describer:
    """The preset's describer; `allow_hosts` (Settings.fetch_allow_hosts) are the non-public hosts its example
    images may come from."""
    if choice.describer == "openai":
        return make_describer("openai", base_url=choice.describer_base_url, model=choice.describer_model,
                              api_key=choice.describer_api_key, url_guard=UrlGuard(allow_hosts))
    if choice.describer == "vlm":
        return make_describer("vlm", model=choice.vlm_model,
                              image_loader=partial(load_image, fetcher=build_image_fetcher(choice, allow_hosts)))
    return make_describer("card-text")


@lru_cache(maxsize=4)
def build_encoders(choice: ModelChoice) -> tuple[TextEncoder, ImageEncoder | None]:
    """The text encoder and (if the preset has one) the image encoder; one CLIP model serves both halves."""
    clip = f"openclip:{choice.clip_model}:{choice.clip_pretrained}"
    text_preset = clip if choice.text_encoder == "openclip" else "minilm"
    image_preset = clip if choice.image_encoder == "openclip" else None
    options = {"cache_dir": choice.cache_dir} if clip in (text_preset, image_preset) else {}
    return make_encoders(text_preset, image_preset, **options)


@lru_cache(maxsize=4)
def build_query_encoders(choice: ModelChoice) -> tuple[TextEncoder, ImageEncoder | None]:
    """The encoders a search process encodes queries with: the preset's, except that MiniLM runs on ONNX Runtime
    when it is installed (the same vectors to 1e-6 cosine, about 1.4x faster for one query on the CPU:
    bench/encode_speed.py). A failed ONNX export is logged and the torch encoder used instead."""
    if choice.text_encoder != "minilm" or importlib.util.find_spec("onnxruntime") is None:
        return build_encoders(choice)
    from embedding.onnx_minilm import OnnxMiniLMTextEncoder

    try:
        text_encoder = OnnxMiniLMTextEncoder(Path(choice.cache_dir))
    except Exception as error:  # noqa: BLE001 - the torch encoder gives the same vectors, only slower
        log.warning("ONNX MiniLM unavailable (%s: %s); encoding queries with torch", type(error).__name__, error)
        return build_encoders(choice)
    return text_encoder, build_encoders(choice)[1] if choice.image_encoder != "none" else None


@lru_cache(maxsize=4)
def build_image_fetcher(choice: ModelChoice, allow_hosts: tuple[str, ...] = ()) -> ImageFetcher:
    """The process's image fetcher (one disk cache and connection pool for the describer and the encoder);
    `allow_hosts` (Settings.fetch_allow_hosts) are the non-public hosts it may fetch from."""
    return ImageFetcher(Path(choice.images_dir), allow_hosts=allow_hosts)
