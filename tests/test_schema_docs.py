"""The schema documents itself: every table, view and column of a freshly migrated database carries a comment (the
job queue's vendored tables excepted), and docs/schema.md is exactly what `zoo db docs` writes from it."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cli import main as cli
from db.schema_docs import missing_comments, relations

DOC = Path(__file__).resolve().parent.parent / "docs" / "schema.md"


def test_every_table_view_and_column_has_a_comment(engine: Engine):
    with engine.connect() as conn:
        missing = missing_comments(relations(conn))
    assert not missing, ("no comment on: " + "; ".join(missing) + ". Give tables and columns comment= in "
                         "db/schema.py and their migration, views COMMENT ON VIEW/COLUMN in theirs.")


def test_docs_schema_md_is_what_zoo_db_docs_writes(engine: Engine, database_url: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo_home"))
    written = tmp_path / "schema.md"
    assert cli.main(["db", "docs", "--output", str(written)]) == 0
    fresh, committed = written.read_text(encoding="utf-8"), DOC.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True),
                                        "docs/schema.md", "zoo db docs", n=1))
    assert fresh == committed, f"docs/schema.md is stale: run `zoo db docs` and commit it.\n{diff[:4000]}"
