"""The read-only role for analysts and BI tools: SELECT on the catalogue's tables and views, nothing else.

Migration 0012 runs these statements where the migrating user may create roles; where it may not, `zoo db
reader-sql` prints the same statements for a DBA. Default privileges make the tables and views that later
migrations add readable too (those created by the same owner). The job queue's tables (procrastinate_* and
studio_jobs) stay closed: they hold the requests of the HTTP API's users, not the catalogue. The role's sessions
are read-only by default as well, so even a temporary table is refused.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

READER_ROLE = "zoo_reader"

_CREATE = """DO $$ BEGIN
  CREATE ROLE {role} LOGIN{password};
EXCEPTION WHEN duplicate_object THEN NULL;  -- created already (roles are shared by the server's databases)
END $$"""

# Closed again after the blanket grant; a DO block so the statement stands on any database the zoo migrated.
_CLOSE_QUEUE = """DO $$ DECLARE relation text; BEGIN
  FOR relation IN SELECT quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'p')
        AND (c.relname = 'studio_jobs' OR c.relname LIKE 'procrastinate\\_%')
  LOOP EXECUTE 'REVOKE ALL ON public.' || relation || ' FROM {role}'; END LOOP;
END $$"""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def may_manage_roles(conn: Connection) -> bool:
    """Whether the connected user may create roles (a superuser, or one with CREATEROLE)."""
    return bool(conn.execute(text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"))
                .scalar())


def reader_exists(conn: Connection) -> bool:
    return conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": READER_ROLE}).first() is not None


def role_statements(password: str | None = None) -> list[str]:
    """Create the role (with `password`, or none: it then logs in only where the server trusts the connection) and
    make its sessions read-only; these need the right to create roles."""
    secret = "" if password is None else " PASSWORD '" + password.replace("'", "''") + "'"
    return [_CREATE.format(role=READER_ROLE, password=secret),
            f"ALTER ROLE {READER_ROLE} SET default_transaction_read_only = on"]


def grant_statements(database: str, owner: str) -> list[str]:
    """Let the role read the catalogue of `database`, including what `owner` (the zoo's migrating user) creates
    there later; these need only the rights of that owner."""
    return [
        f"GRANT CONNECT ON DATABASE {_ident(database)} TO {READER_ROLE}",
        f"GRANT USAGE ON SCHEMA public TO {READER_ROLE}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER_ROLE}",
        _CLOSE_QUEUE.format(role=READER_ROLE),
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {_ident(owner)} IN SCHEMA public GRANT SELECT ON TABLES TO {READER_ROLE}",
    ]


def revoke_statements(database: str, owner: str) -> list[str]:
    """Undo grant_statements on `database`; the role itself is dropped only when no other database still uses it."""
    return [
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {_ident(owner)} IN SCHEMA public REVOKE SELECT ON TABLES FROM {READER_ROLE}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {READER_ROLE}",
        f"REVOKE USAGE ON SCHEMA public FROM {READER_ROLE}",
        f"REVOKE CONNECT ON DATABASE {_ident(database)} FROM {READER_ROLE}",
    ]


def apply(conn: Connection) -> bool:
    """Create the role where the connected user may, and let it read this database; False (nothing done) when the
    role does not exist and the user may not create it. Every statement may run again."""
    statements = grant_statements(*database_and_owner(conn))
    if may_manage_roles(conn):
        statements = role_statements() + statements
    elif not reader_exists(conn):
        return False
    for statement in statements:
        conn.execute(text(statement))
    return True


def database_and_owner(conn: Connection) -> tuple[str, str]:
    database, owner = conn.execute(text("SELECT current_database(), current_user")).one()
    return database, owner


def sql_for_dba(conn: Connection) -> str:
    """The statements a DBA runs (as a superuser or a user with CREATEROLE) where the zoo's user may not create
    roles, for the database and owner this connection names; the password is a placeholder to replace."""
    database, owner = database_and_owner(conn)
    statements = role_statements("choose-a-password") + grant_statements(database, owner)
    header = (f"-- The read-only role {READER_ROLE} for the zoo in database {database} (tables owned by {owner}).\n"
              "-- Run as a superuser or a user with CREATEROLE; replace the password first.\n")
    return header + "".join(statement + ";\n" for statement in statements)
