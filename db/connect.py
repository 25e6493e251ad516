"""Connection URLs for people and their tools (`zoo db url`, `zoo db shell`): plain libpq `postgresql://` URLs that
psql, pandas/SQLAlchemy and BI tools accept, for the configured database, as its owner or as the read-only role.

DATABASE_URL when it is set; else the embedded server, which must be running (`zoo db start`): a URL printed by a
command that started the server itself would stop working when that command exits.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from config import Settings
from db import embedded, passwords, reader_role
from db.service import TCP_HOST, ServerStatus, status


class NotRunning(RuntimeError):
    """The embedded server is not running, so there is nothing to connect to."""


class NoReader(RuntimeError):
    """The read-only role does not exist on the configured database."""


def plain_url(url: str) -> str:
    """`url` without a SQLAlchemy driver suffix (postgresql+psycopg:// -> postgresql://), which libpq refuses."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+')[0]}://{rest}"


def with_user(url: str, user: str, password: str | None) -> str:
    """`url` with its user (and password, or none) replaced."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    secret = f":{quote(password, safe='')}" if password else ""
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}{secret}@{host}"))


def running_embedded(settings: Settings) -> ServerStatus:
    server = status(settings.embedded_pg_dir.resolve())
    if not server.running:
        raise NotRunning(f"the embedded server ({settings.embedded_pg_dir}) is not running: start it with "
                         "`zoo db start` (add --tcp for tools that cannot use its Unix socket)")
    return server


def embedded_url(server: ServerStatus, user: str, password: str | None) -> str:
    """The server's TCP address when it listens on one (what BI tools need), else its Unix socket."""
    if server.tcp_host:
        secret = f":{quote(password, safe='')}" if password else ""
        return f"postgresql://{quote(user, safe='')}{secret}@{TCP_HOST}:{server.port}/{embedded.DATABASE}"
    return embedded.socket_url(server, user, password)


def owner_url(settings: Settings) -> str:
    """The URL the zoo itself connects with."""
    if settings.database_url:
        return plain_url(settings.database_url)
    server = running_embedded(settings)
    password = passwords.role_password(settings.embedded_pg_secrets_dir, embedded.SUPERUSER) if server.tcp_host else None
    return embedded_url(server, embedded.SUPERUSER, password)


def reader_url(settings: Settings) -> str:
    """The read-only role's URL. On the embedded server the role is made ready first (the catalogue migrated, the
    role and its grants in place even where the database was migrated before migration 0012 made them, its
    generated password set); elsewhere the password is the DBA's, so the URL carries none (libpq takes it from
    PGPASSWORD or ~/.pgpass)."""
    from db.engine import engine_for_url
    from db.migrate import ensure_migrated

    url = owner_url(settings)
    engine = engine_for_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
    if settings.database_url:
        with engine.connect() as conn:
            if not reader_role.reader_exists(conn):
                raise NoReader(f"the read-only role {reader_role.READER_ROLE} does not exist on this database "
                               "(its user may not create roles): give the output of `zoo db reader-sql` to a DBA")
        return with_user(url, reader_role.READER_ROLE, None)
    password = passwords.role_password(settings.embedded_pg_secrets_dir, reader_role.READER_ROLE)
    with ensure_migrated(engine).begin() as conn:
        reader_role.apply(conn)
        passwords.set_role_password(conn, reader_role.READER_ROLE, password)
    return embedded_url(running_embedded(settings), reader_role.READER_ROLE, password)
