"""Bulk loading through COPY: the fast path for thousands of rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection


def driver_cursor(conn: Connection):
    """The psycopg 3 cursor under a SQLAlchemy connection (COPY is not exposed by SQLAlchemy)."""
    return conn.connection.driver_connection.cursor()


def copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    with driver_cursor(conn).copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def stage_rows(conn: Connection, table: str, like: str, columns: Sequence[str], rows: Iterable[Sequence],
               extra_columns: str = "") -> None:
    """Create temp table `table` shaped like `like` (plus `extra_columns` definitions, for inputs the target derives
    its columns from; dropped at commit) and COPY `rows` into it."""
    extra = f", {extra_columns}" if extra_columns else ""
    driver_cursor(conn).execute(f"CREATE TEMP TABLE {table} (LIKE {like} INCLUDING DEFAULTS{extra}) ON COMMIT DROP")
    copy_rows(conn, table, columns, rows)
