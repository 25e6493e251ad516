"""Dagster resources: the database and the Civitai client, configured from the project's settings."""


from dagster import ConfigurableResource
from sqlalchemy import Engine

from config import Settings
from crawlers.civitai_client import CivitaiClient
from db.engine import database_url, engine_for_url
from db.migrate import ensure_migrated


class DatabaseResource(ConfigurableResource):
    """Postgres with pgvector: `url` when given, else DATABASE_URL, else the embedded server under ZOO_HOME."""

    url: str | None = None

    def engine(self) -> Engine:
        """The engine, with the schema migrated to head (the pipeline's first step on a new database)."""
        return ensure_migrated(engine_for_url(self.url or database_url(Settings.from_env())))


class CivitaiResource(ConfigurableResource):
    """The Civitai API client; unset fields come from CIVITAI_BASE_URL, CIVITAI_API_KEY, CIVITAI_RATE_LIMIT, ..."""

    base_url: str | None = None
    api_key: str | None = None
    requests_per_second: float | None = None
    backoff_base_seconds: float = 1.0

    def client(self) -> CivitaiClient:
        settings = Settings.from_env()
        return CivitaiClient(
            self.base_url or settings.civitai_base_url,
            api_key=self.api_key or settings.civitai_api_key,
            requests_per_second=self.requests_per_second or settings.civitai_requests_per_second,
            timeout=settings.civitai_timeout_seconds,
            max_retries=settings.civitai_max_retries,
            backoff_base=self.backoff_base_seconds,
        )
