"""One settings object for the whole project, read from the environment and validated at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse


class SettingsError(ValueError):
    """A setting has a value the project cannot use; the message names the variable and what is expected."""


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

    @property
    def embedded_pg_dir(self) -> Path:
        """The embedded server's data lives in its own folder: pgserver as root chowns its parents."""
        return self.zoo_home / "pg" / "data"

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
        retries = env.get("CIVITAI_MAX_RETRIES", "8")
        if not retries.isdigit():
            raise SettingsError(f"CIVITAI_MAX_RETRIES={retries!r} must be a whole number")
        return cls(
            zoo_home=home,
            database_url=database_url,
            civitai_base_url=base_url,
            civitai_api_key=env.get("CIVITAI_API_KEY") or None,
            civitai_requests_per_second=_float(env, "CIVITAI_RATE_LIMIT", 1.0, 0.001),
            civitai_timeout_seconds=_float(env, "CIVITAI_TIMEOUT", 30.0, 0.1),
            civitai_max_retries=int(retries),
        )
