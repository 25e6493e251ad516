"""The models resource: the describer, encoders and image fetcher of the configured preset, built once per process."""

import os

from dagster import ConfigurableResource

from config import Settings
from embedding.describers import Describer
from embedding.encoders import ImageEncoder, TextEncoder
from embedding.image_fetch import ImageFetcher
from embedding.presets import ModelChoice, build_describer, build_encoders, build_image_fetcher


class ModelsResource(ConfigurableResource):
    """Preset models (ZOO_PRESET and the ZOO_* overrides); fields set here override the environment."""

    describer: str | None = None
    text_encoder: str | None = None
    image_encoder: str | None = None

    def _settings(self) -> Settings:
        overrides = {"ZOO_DESCRIBER": self.describer, "ZOO_TEXT_ENCODER": self.text_encoder,
                     "ZOO_IMAGE_ENCODER": self.image_encoder}
        return Settings.from_env({**os.environ, **{k: v for k, v in overrides.items() if v}})

    def describer_model(self) -> Describer:
        return build_describer(ModelChoice.from_settings(self._settings()))

    def encoders(self) -> tuple[TextEncoder, ImageEncoder | None]:
        return build_encoders(ModelChoice.from_settings(self._settings()))

    def image_fetcher(self) -> ImageFetcher:
        return build_image_fetcher(self._settings())
