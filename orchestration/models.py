"""The models resource: the describer, encoders and image fetcher of the configured preset, built once per process."""

from __future__ import annotations

from dataclasses import asdict, fields

from dagster import ConfigurableResource

from config import Settings
from embedding.describers import Describer
from embedding.encoders import ImageEncoder, TextEncoder
from embedding.image_fetch import ImageFetcher
from embedding.presets import ModelChoice, build_describer, build_encoders, build_image_fetcher


class ModelsResource(ConfigurableResource):
    """The preset's models, as `embedding.presets.ModelChoice` names them (zoo_resources fills them in)."""

    describer: str
    text_encoder: str
    image_encoder: str
    clip_model: str
    clip_pretrained: str
    describer_base_url: str | None
    describer_model: str | None
    describer_api_key: str | None
    vlm_model: str
    cache_dir: str
    images_dir: str
    fetch_allow_hosts: list[str] = []  # Settings.fetch_allow_hosts: non-public hosts example images may come from

    @classmethod
    def from_settings(cls, settings: Settings, **changes: object) -> ModelsResource:
        """The models the settings choose; `changes` set fields."""
        return cls(**{**asdict(ModelChoice.from_settings(settings)),
                      "fetch_allow_hosts": list(settings.fetch_allow_hosts), **changes})

    def choice(self) -> ModelChoice:
        return ModelChoice(**{field.name: getattr(self, field.name) for field in fields(ModelChoice)})

    def load_describer(self) -> Describer:
        return build_describer(self.choice(), tuple(self.fetch_allow_hosts))

    def encoders(self) -> tuple[TextEncoder, ImageEncoder | None]:
        return build_encoders(self.choice())

    def image_fetcher(self) -> ImageFetcher:
        return build_image_fetcher(self.choice(), tuple(self.fetch_allow_hosts))
