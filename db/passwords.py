"""Passwords of the embedded server's roles: generated once, kept in files only their owner can read (mode 0600).

They matter once the server listens on TCP (`zoo db start --tcp`): its Unix socket lives in a folder private to
the server's user and trusts whoever reaches it, but localhost is reachable by every user of the machine.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from psycopg import sql
from sqlalchemy import Connection

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def role_password(secrets_dir: Path, role: str) -> str:
    """The password kept for `role` in `secrets_dir`, generated on first use.

    Written to a temporary file and linked into place, so two processes asking at once agree on one password and
    no reader ever sees a half-written file; a file left readable by others is made private again.
    """
    path = secrets_dir / f"{role}.password"
    if not path.exists():
        secrets_dir.mkdir(parents=True, exist_ok=True)
        secrets_dir.chmod(PRIVATE_DIR)
        draft = secrets_dir / f".{role}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(24) + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process was first: use its password
        finally:
            draft.unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_FILE)
    return path.read_text().strip()


def set_role_password(conn: Connection, role: str, password: str) -> None:
    """Give `role` this password and the right to log in (quoted by the driver: ALTER ROLE takes no parameters)."""
    statement = sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
    conn.exec_driver_sql(statement.as_string(conn.connection.driver_connection))
