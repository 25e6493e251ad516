"""One settings object for the whole project, read from the environment and validated at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from config.allow_list import parse_allow_list


class SettingsError(ValueError):
    """A setting has a value the project cannot use; the message names the variable and what is expected."""


# Civitai's browsing levels. The NSFW rule (crawlers/nsfw.py) keeps R and above out of serving whatever this allows.
CONTENT_LEVELS = {"PG": 1, "PG-13": 2, "R": 4, "X": 8, "XXX": 16}


def content_level_named(name: str, variable: str = "content level") -> int:
    """The level of a name as users write it (PG, PG-13 / PG13, R, X, XXX)."""
    key = name.strip().upper().replace("PG13", "PG-13")
    if key not in CONTENT_LEVELS:
        raise SettingsError(f"{variable}={name!r}: choose one of {', '.join(CONTENT_LEVELS)}")
    return CONTENT_LEVELS[key]


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise SettingsError(f"{name}={raw!r}: use true or false")
    return raw in ("1", "true", "yes", "on")


def _origins(raw: str | None) -> tuple[str, ...]:
    """ZOO_CORS_ORIGINS: comma-separated http(s) origins (scheme://host[:port], no path), or `*` for any."""
    origins = tuple(part.strip().rstrip("/") for part in (raw or "").split(",") if part.strip())
    for origin in origins:
        parsed = urlparse(origin)
        if origin != "*" and (parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path):
            raise SettingsError(f"ZOO_CORS_ORIGINS: {origin!r} is not an origin such as https://example.org or *")
    return origins


def _float(env: dict[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


# A preset chooses the models; individual variables override its choices.
PRESETS = {
    "lite": {"describer": "card-text", "text_encoder": "minilm", "image_encoder": "none"},
    "full": {"describer": "vlm", "text_encoder": "openclip", "image_encoder": "openclip"},
}
CHOICES = {
    "describer": ("card-text", "openai", "vlm"),
    "text_encoder": ("minilm", "openclip"),
    "image_encoder": ("none", "openclip"),
}


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the defaults a laptop user gets."""

    zoo_home: Path
    database_url: str | None
    civitai_base_url: str = "https://civitai.com"
    civitai_api_key: str | None = field(default=None, repr=False)
    civitai_requests_per_second: float = 1.0
    civitai_timeout_seconds: float = 30.0
    civitai_max_retries: int = 8
    fetch_allow_hosts: tuple[str, ...] = ()  # ZOO_FETCH_ALLOW_HOSTS (config.allow_list)
    preset: str = "lite"
    describer: str = "card-text"
    text_encoder: str = "minilm"
    image_encoder: str = "none"
    clip_model: str = "ViT-L-14"
    clip_pretrained: str = "openai"
    describer_base_url: str | None = None
    describer_model: str | None = None
    describer_api_key: str | None = field(default=None, repr=False)
    vlm_model: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    sam_checkpoint: str | None = None
    sam_model_type: str = "vit_h"
    shards: int = 2
    lock_wait_seconds: float = 600.0
    max_removed_share: float = 0.05
    max_removed_floor: int = 20
    max_content_level: int = 2  # CONTENT_LEVELS["PG-13"]
    serve_likeness: bool = False
    api_token: str | None = field(default=None, repr=False)  # ZOO_API_TOKEN: bearer token for generate/edit
    cors_origins: tuple[str, ...] = ()  # ZOO_CORS_ORIGINS: browser origins allowed to call the HTTP API
    studio: bool = True  # ZOO_STUDIO: off for search-only servers (generate/edit answer 503)
    max_body_bytes: int = 20 << 20  # ZOO_MAX_BODY_MB: the largest request body the HTTP API reads
    dagster_dir: Path | None = None  # DAGSTER_HOME; unset: dagster_home is under zoo_home

    @property
    def dagster_home(self) -> Path:
        """The persistent Dagster instance every `zoo refresh` and `zoo demo` is recorded in, so that `dagster dev`
        started with the same DAGSTER_HOME shows their runs, materialisations and checks."""
        return self.dagster_dir or self.zoo_home / "dagster"

    @property
    def embedded_pg_dir(self) -> Path:
        """The embedded server's data lives in its own folder: pgserver as root chowns its parents."""
        return self.zoo_home / "pg" / "data"

    @property
    def embedded_pg_secrets_dir(self) -> Path:
        """The embedded server's generated passwords (0600 files), beside its data folder, not in it: that folder
        belongs to the server's own user."""
        return self.zoo_home / "pg" / "secrets"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("ZOO_HOME") or Path.home() / ".zoo").expanduser().resolve()
        database_url = env.get("DATABASE_URL") or None
        if database_url and urlparse(database_url).scheme.split("+")[0] not in ("postgresql", "postgres"):
            raise SettingsError(f"DATABASE_URL must be a postgresql:// URL, got scheme {urlparse(database_url).scheme!r}")
        base_url = (env.get("CIVITAI_BASE_URL") or "https://civitai.com").rstrip("/")
        if urlparse(base_url).scheme not in ("http", "https") or not urlparse(base_url).netloc:
            raise SettingsError(f"CIVITAI_BASE_URL must be an http(s) site root such as https://civitai.com, got {base_url!r}")
        if base_url.endswith("/api/v1"):
            raise SettingsError("CIVITAI_BASE_URL is the site root; the client appends /api/v1 itself")
        try:
            allow_hosts = tuple(entry.text for entry in parse_allow_list(env.get("ZOO_FETCH_ALLOW_HOSTS")))
        except ValueError as error:
            raise SettingsError(f"ZOO_FETCH_ALLOW_HOSTS: {error} (comma-separated host[:port], IP[:port] or "
                                "CIDR entries)") from None
        preset = env.get("ZOO_PRESET", "lite")
        if preset not in PRESETS:
            raise SettingsError(f"ZOO_PRESET={preset!r}: choose one of {', '.join(PRESETS)}")
        chosen = {**PRESETS[preset]}
        for name, variable in (("describer", "ZOO_DESCRIBER"), ("text_encoder", "ZOO_TEXT_ENCODER"),
                               ("image_encoder", "ZOO_IMAGE_ENCODER")):
            chosen[name] = env.get(variable) or chosen[name]
            if chosen[name] not in CHOICES[name]:
                raise SettingsError(f"{variable}={chosen[name]!r}: choose one of {', '.join(CHOICES[name])}")
        if chosen["describer"] == "openai" and not (env.get("ZOO_DESCRIBER_BASE_URL") and env.get("ZOO_DESCRIBER_MODEL")):
            raise SettingsError("ZOO_DESCRIBER=openai needs ZOO_DESCRIBER_BASE_URL and ZOO_DESCRIBER_MODEL")
        retries = env.get("CIVITAI_MAX_RETRIES", "8")
        if not retries.isdigit():
            raise SettingsError(f"CIVITAI_MAX_RETRIES={retries!r} must be a whole number")
        removed_floor = env.get("ZOO_MAX_REMOVED_FLOOR") or "20"
        if not removed_floor.isdigit():
            raise SettingsError(f"ZOO_MAX_REMOVED_FLOOR={removed_floor!r} must be a whole number")
        removed_share = _float(env, "ZOO_MAX_REMOVED_SHARE", 0.05, 0.0)
        if removed_share > 1:
            raise SettingsError(f"ZOO_MAX_REMOVED_SHARE={removed_share!r} is a share of the served versions: "
                                "at most 1")
        return cls(
            max_content_level=content_level_named(env.get("ZOO_MAX_CONTENT_LEVEL") or "PG-13",
                                                  "ZOO_MAX_CONTENT_LEVEL"),
            serve_likeness=_bool(env, "ZOO_SERVE_LIKENESS", False),
            api_token=(env.get("ZOO_API_TOKEN") or "").strip() or None,
            cors_origins=_origins(env.get("ZOO_CORS_ORIGINS")),
            studio=_bool(env, "ZOO_STUDIO", True),
            max_body_bytes=int(_float(env, "ZOO_MAX_BODY_MB", 20.0, 0.01) * (1 << 20)),
            zoo_home=home,
            dagster_dir=Path(env["DAGSTER_HOME"]).expanduser().resolve() if env.get("DAGSTER_HOME") else None,
            database_url=database_url,
            civitai_base_url=base_url,
            civitai_api_key=env.get("CIVITAI_API_KEY") or None,
            civitai_requests_per_second=_float(env, "CIVITAI_RATE_LIMIT", 1.0, 0.001),
            civitai_timeout_seconds=_float(env, "CIVITAI_TIMEOUT", 30.0, 0.1),
            civitai_max_retries=int(retries),
            fetch_allow_hosts=allow_hosts,
            preset=preset,
            clip_model=env.get("ZOO_CLIP_MODEL") or "ViT-L-14",
            clip_pretrained=env.get("ZOO_CLIP_PRETRAINED") or "openai",
            describer_base_url=env.get("ZOO_DESCRIBER_BASE_URL") or None,
            describer_model=env.get("ZOO_DESCRIBER_MODEL") or None,
            describer_api_key=env.get("ZOO_DESCRIBER_API_KEY") or None,
            vlm_model=env.get("ZOO_VLM_MODEL") or "Qwen/Qwen2.5-VL-3B-Instruct",
            shards=int(_float(env, "ZOO_SHARDS", 2, 1)),
            lock_wait_seconds=_float(env, "ZOO_LOCK_WAIT_SECONDS", 600.0, 0.0),
            max_removed_share=removed_share,
            max_removed_floor=int(removed_floor),
            sam_checkpoint=env.get("ZOO_SAM_CHECKPOINT") or None,
            sam_model_type=env.get("ZOO_SAM_MODEL_TYPE") or "vit_h",
            **chosen,
        )
