"""Which database errors are the rows' fault (quarantine the item) and which are the connection's or the server's
(fail the run; the next run stores the same items)."""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import DBAPIError

# SQLSTATE classes a row's values can cause: cardinality (21: one statement touching a row twice), data exceptions
# (22: out of range, bad encoding, ...), integrity constraints (23: unique, foreign key, not null, check) and
# program limits (54: an index row or a tsvector too big). Anything else (a lost connection, a deadlock, a shutdown,
# a full disk, a statement the code got wrong) says nothing about the rows and must not quarantine them.
ROW_FAULT_CLASSES = frozenset({"21", "22", "23", "54"})


class RowsRefused(Exception):
    """Raised by the zoo's own writes when rows must not be stored as given (a version id owned by another model)."""


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a psycopg error, raised bare (COPY on the driver's cursor) or wrapped by SQLAlchemy."""
    original = error.orig if isinstance(error, DBAPIError) else error
    return original.sqlstate if isinstance(original, psycopg.Error) else None


def rows_refused(error: BaseException) -> bool:
    """True when the database (or the zoo's write) refused the rows it was sent, whatever the error's class."""
    if isinstance(error, RowsRefused):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return False
    state = sqlstate(error)
    return state is not None and state[:2] in ROW_FAULT_CLASSES


def describe(error: BaseException) -> str:
    """The database's own message (first line and detail), without SQLAlchemy's wrapping and SQL echo."""
    original = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    return str(original).strip()
