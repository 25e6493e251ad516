"""The schema: Alembic migrations against a fresh Postgres, the ORM/migration agreement, indexes and the views.

The view checks load the 2023 fixture (tests/fixtures/README.md) and compare with the documented facts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text

from crawlers.catalogue import normalise_pending
from crawlers.dump import ingest_dump
from crawlers.taxonomy import ADAPTER_TYPES, CHECKPOINT_TYPES, types_by_role
from db import migrate
from db.engine import engine_for_url
from db.links import rebuild_links, resolve_image_resources

try:
    from tests.helpers import FIXTURES, truncate_all
except ImportError:  # tests/ not importable as a package: pytest put tests/ itself on sys.path
    from helpers import FIXTURES, truncate_all

TABLES = {"models_raw", "models", "model_versions", "model_files", "images", "image_resources",
          "adapter_checkpoint_links", "crawl_state", "crawl_runs", "quarantine", "derived_stamps"}
VIEWS = {"served_model_versions", "adapters_per_base_model", "nsfw_share_by_type", "top_adapter_checkpoint_pairs"}
HASH_COLUMNS = ("sha256", "autov1", "autov2", "autov3", "crc32", "blake3")


@pytest.fixture(scope="module")
def fresh_engine(pg_admin_url: str) -> Iterator[Engine]:
    """An empty database of this test's own, created with CREATE DATABASE and not migrated."""
    name = f"zoo_schema_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = engine_for_url(url)
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def _tables_and_views(engine: Engine) -> tuple[set[str], set[str]]:
    inspector = inspect(engine)
    return set(inspector.get_table_names()), set(inspector.get_view_names())


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _head(engine: Engine) -> str:
    return ScriptDirectory.from_config(migrate.alembic_config(engine)).get_current_head()


def test_upgrade_check_downgrade_and_upgrade_again_on_a_fresh_database(fresh_engine: Engine):
    assert _tables_and_views(fresh_engine) == (set(), set())
    head = _head(fresh_engine)

    migrate.upgrade(fresh_engine)
    tables, views = _tables_and_views(fresh_engine)
    assert TABLES <= tables
    assert VIEWS <= views
    assert _revision(fresh_engine) == head
    migrate.check(fresh_engine)  # raises when the ORM metadata and the migrated schema disagree
    with fresh_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_extension WHERE extname = 'vector'")).scalar_one() == 1
        # the extension is usable, not only listed
        assert conn.execute(text("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector")).scalar_one() == pytest.approx(1.0)

    command.downgrade(migrate.alembic_config(fresh_engine), "base")
    tables, views = _tables_and_views(fresh_engine)
    assert not (TABLES & tables)
    assert not (VIEWS & views)
    assert _revision(fresh_engine) is None

    migrate.upgrade(fresh_engine)
    tables, views = _tables_and_views(fresh_engine)
    assert TABLES <= tables and VIEWS <= views
    migrate.check(fresh_engine)

    migrate.upgrade(fresh_engine)  # upgrading a database at head is a no-op
    assert _revision(fresh_engine) == head


def test_check_detects_a_schema_that_drifted_from_the_models(fresh_engine: Engine):
    """`check` must fail when the database and the ORM disagree, or passing it proves nothing."""
    migrate.upgrade(fresh_engine)
    with fresh_engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_model_files_sha256"))
    try:
        with pytest.raises(Exception, match="(?i)detected|new upgrade operations"):
            migrate.check(fresh_engine)
    finally:
        with fresh_engine.begin() as conn:
            conn.execute(text("CREATE INDEX ix_model_files_sha256 ON model_files (sha256)"))
    migrate.check(fresh_engine)


def test_every_hash_column_of_model_files_is_indexed(engine: Engine):
    with engine.connect() as conn:
        definitions = conn.execute(text(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'model_files'"
        )).scalars().all()
    indexed_first_columns = set()
    for definition in definitions:
        columns = definition.split("(", 1)[1].rstrip(")")
        indexed_first_columns.add(columns.split(",")[0].strip())
    for column in (*HASH_COLUMNS, "name_stem", "version_id"):
        assert column in indexed_first_columns, column


def test_image_resources_are_indexed_by_resolved_version(engine: Engine):
    with engine.connect() as conn:
        definitions = conn.execute(text(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'image_resources'"
        )).scalars().all()
    assert any("(resolved_version_id)" in definition for definition in definitions)


# ---------------------------------------------------------------------------------------------------------------
# the views, on the 2023 fixture
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded_2023(engine: Engine) -> Engine:
    truncate_all(engine)
    ingest_dump(engine, Path(FIXTURES / "civitai_2023.jsonl"))
    normalise_pending(engine)
    resolve_image_resources(engine, types_by_role())
    rebuild_links(engine, ADAPTER_TYPES, CHECKPOINT_TYPES)
    return engine


def test_nsfw_share_by_type_matches_the_readme(loaded_2023: Engine):
    with loaded_2023.connect() as conn:
        rows = {row.type: row for row in conn.execute(text(
            "SELECT type, models, nsfw_models, nsfw_share, by_flag, by_level, by_images FROM nsfw_share_by_type"))}
    # README 2023 table: 3 Checkpoints, 4 LORAs (100202 by flag, 100203 by image share), 1 TI, 1 Hypernetwork
    assert {t: (r.models, r.nsfw_models, r.by_flag, r.by_level, r.by_images) for t, r in rows.items()} == {
        "Checkpoint": (3, 0, 0, 0, 0),
        "LORA": (4, 2, 1, 0, 1),
        "TextualInversion": (1, 0, 0, 0, 0),
        "Hypernetwork": (1, 0, 0, 0, 0),
    }
    assert float(rows["LORA"].nsfw_share) == pytest.approx(0.5)
    assert float(rows["Checkpoint"].nsfw_share) == 0.0


def test_served_model_versions_are_the_sfw_versions_with_their_primary_file(loaded_2023: Engine):
    with loaded_2023.connect() as conn:
        rows = conn.execute(text(
            "SELECT version_id, model_id, primary_file_id, primary_file_name, primary_file_sha256, download_url "
            "FROM served_model_versions ORDER BY version_id")).all()
    assert [(r.version_id, r.model_id, r.primary_file_id) for r in rows] == [
        (200101, 100101, 300101), (200102, 100101, 300102), (200103, 100102, 300104), (200104, 100103, 300105),
        (200201, 100201, 300201), (200204, 100204, 300204), (200301, 100301, 300301), (200401, 100401, 300401),
    ]
    by_version = {r.version_id: r for r in rows}
    assert by_version[200102].primary_file_name == "meadowlightRealism_v20.safetensors"
    assert by_version[200102].primary_file_sha256.startswith("58B33C1D7A")
    assert all(r.download_url for r in rows)


def test_adapters_per_base_model(loaded_2023: Engine):
    with loaded_2023.connect() as conn:
        rows = conn.execute(text(
            "SELECT base_model, base_model_family, type, models, versions, sfw_versions FROM adapters_per_base_model "
            "ORDER BY base_model, type")).all()
    assert [tuple(r) for r in rows] == [
        ("SD 1.5", "SD1.x", "Hypernetwork", 1, 1, 1),
        ("SD 1.5", "SD1.x", "LORA", 3, 3, 1),
        ("SD 1.5", "SD1.x", "TextualInversion", 1, 1, 1),
        ("SDXL 1.0", "SDXL", "LORA", 1, 1, 1),
    ]


def test_top_adapter_checkpoint_pairs(loaded_2023: Engine):
    with loaded_2023.connect() as conn:
        rows = conn.execute(text(
            "SELECT adapter_version_id, adapter_name, adapter_type, checkpoint_version_id, checkpoint_name, "
            "image_count, sfw_image_count, avg_weight, family_compatible FROM top_adapter_checkpoint_pairs")).all()
    assert len(rows) == 11  # README: 11 pairs
    counts = [r.image_count for r in rows]
    assert counts == sorted(counts, reverse=True)
    # the two 3-image pairs come first, by adapter version
    assert [(r.adapter_version_id, r.checkpoint_version_id, r.image_count, r.sfw_image_count) for r in rows[:2]] == [
        (200202, 200102, 3, 2), (200203, 200103, 3, 2)]
    assert rows[0].adapter_name == "Velvet Hour Lighting" and rows[0].checkpoint_name == "Meadowlight Realism"
    assert rows[1].adapter_name == "Midnight Pinup Poses" and rows[1].checkpoint_name == "Inkpot Anime Mix"
    embeds = [r for r in rows if r.adapter_type == "TextualInversion"]
    assert sorted(r.checkpoint_version_id for r in embeds) == [200101, 200103]
    assert all(r.avg_weight is None for r in embeds)
    assert all(r.family_compatible for r in rows)
