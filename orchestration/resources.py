"""Dagster resources: the database, the Civitai client and the models, all built from one Settings by zoo_resources."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import ConfigurableResource, EnvVar
from sqlalchemy import Engine

from config import Settings
from crawlers.catalogue import WithdrawalLimit
from crawlers.civitai_client import CivitaiClient
from db.engine import engine_for_url, url_or_embedded
from db.locks import ZooBusy, advisory_lock
from db.migrate import ensure_migrated
from embedding.search_index import ServingLimits
from orchestration.models import ModelsResource


class RunRefused(RuntimeError):
    """A step refused to run or to commit, and says why and what to do (one line: the CLI prints it as it is)."""


class DatabaseResource(ConfigurableResource):
    """Postgres with pgvector: `url`, or without one the embedded server whose data lives in `embedded_dir`; how
    long a step waits for another run's lock; how many served versions one refresh may withdraw."""

    url: str | None
    embedded_dir: str
    lock_wait_seconds: float = 600.0
    max_removed_share: float = 0.05
    max_removed_floor: int = 20
    max_content_level: int = 2
    serve_likeness: bool = False

    def engine(self) -> Engine:
        """The engine, with the schema migrated to head (the pipeline's first step on a new database)."""
        return ensure_migrated(engine_for_url(url_or_embedded(self.url, Path(self.embedded_dir))))

    @contextmanager
    def lock(self, name: str, *, shared: bool = False, holder: str = "zoo") -> Iterator[Engine]:
        """The engine, while this run holds the lock `name` (db/locks.py says which step takes which)."""
        engine = self.engine()
        try:
            with advisory_lock(engine, name, shared=shared, wait_seconds=self.lock_wait_seconds, holder=holder):
                yield engine
        except ZooBusy as busy:
            raise RunRefused(f"{busy}. Run again when it has finished, or set ZOO_LOCK_WAIT_SECONDS to wait "
                             "longer.") from None

    def withdrawal_limit(self) -> WithdrawalLimit:
        return WithdrawalLimit(share=self.max_removed_share, floor=self.max_removed_floor)

    def serving_limits(self) -> ServingLimits:
        """What the search index may hold beyond the NSFW rule."""
        return ServingLimits(max_content_level=self.max_content_level, likeness=self.serve_likeness)



class CivitaiResource(ConfigurableResource):
    """The Civitai API client."""

    base_url: str
    api_key: str | None
    requests_per_second: float
    timeout_seconds: float
    max_retries: int
    backoff_base_seconds: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings, **changes: object) -> CivitaiResource:
        """The client the settings describe; `changes` set fields (tests: a fake server, no waiting)."""
        return cls(**{"base_url": settings.civitai_base_url, "api_key": settings.civitai_api_key,
                      "requests_per_second": settings.civitai_requests_per_second,
                      "timeout_seconds": settings.civitai_timeout_seconds,
                      "max_retries": settings.civitai_max_retries, **changes})

    def client(self) -> CivitaiClient:
        return CivitaiClient(self.base_url, api_key=self.api_key, requests_per_second=self.requests_per_second,
                             timeout=self.timeout_seconds, max_retries=self.max_retries,
                             backoff_base=self.backoff_base_seconds)


def zoo_resources(settings: Settings, *, secrets_as_env_vars: bool = False) -> dict[str, ConfigurableResource]:
    """The resources `database`, `civitai` and `models`, configured from `settings`.

    Dagster's UI shows resource configuration, so a code location passes `secrets_as_env_vars`: the database URL
    and API keys the settings hold are then given as the environment variables the settings read them from, and
    the UI names the variable instead of showing its value.
    """

    def secret(value: str | None, variable: str) -> str | None:
        return EnvVar(variable) if secrets_as_env_vars and value is not None else value

    return {
        "database": DatabaseResource(url=secret(settings.database_url, "DATABASE_URL"),
                                     embedded_dir=str(settings.embedded_pg_dir),
                                     lock_wait_seconds=settings.lock_wait_seconds,
                                     max_removed_share=settings.max_removed_share,
                                     max_removed_floor=settings.max_removed_floor,
                                     max_content_level=settings.max_content_level,
                                     serve_likeness=settings.serve_likeness),
        "civitai": CivitaiResource.from_settings(settings, api_key=secret(settings.civitai_api_key, "CIVITAI_API_KEY")),
        "models": ModelsResource.from_settings(
            settings, describer_api_key=secret(settings.describer_api_key, "ZOO_DESCRIBER_API_KEY")),
    }
