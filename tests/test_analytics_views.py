"""The analytics views of migration 0010 against a small zoo built here, whose answers are worked out by hand.

The zoo (creator, base model, dates; * marks a version dated by created_at, having no published_at):
  1 Checkpoint "Base One"   alice  SD 1.5   v11 2023-03-10        1000 downloads, trained word redstyle
  2 Checkpoint "Base Two"   alice  SD 1.5   v21 2023-03-20*        500 downloads, NSFW (not served)
  3 Checkpoint "XL Base"    bob    SDXL 1.0 v31 2023-04-02         300 downloads
  4 LORA "Red Style"        bob    SD 1.5   v41 2023-04-05, v42 2023-03-01*   200 downloads, trained redstyle
  5 LORA "Red Copy"         carol  SD 1.5   v51 2023-04-20*         50 downloads, primary file = v41's (re-upload)
  6 LORA "XL Red"           carol  SDXL 1.0 v61 2023-04-30 23:30-02:00 (May in UTC), trained redstyle
  7 TextualInversion "Neg"  (none) SD 1.5   v71 2023-02-01*   file with an AutoV2 only, shared with model 8
  8 LORA "Gone"             carol  SD 1.5   v81 2023-01-15*   deleted on Civitai (not served)
Versions 31 and 61 also carry a second model file each whose AutoV2 agree but whose SHA256 differ (not a re-upload),
and the same VAE file (bundled, not a re-uploaded model).
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from sqlalchemy import Connection, Engine, text

from crawlers.taxonomy import base_model_family
from db.descriptions import DescriberKey, preferred_description_rows, record_preferred_describer
from embedding.describe_card import CardTextDescriber
from embedding.refresh import describe_pending

KEY = DescriberKey("vlm:test", "1", "card-text", "1")
S1, S2 = "A1" * 32, "B2" * 32
ALIKE_1, ALIKE_2, VAE = "C" * 10 + "1" * 54, "C" * 10 + "2" * 54, "E" * 64

MODELS = [  # id, name, type, creator, downloads, nsfw, deleted
    (1, "Base One", "Checkpoint", "alice", 1000, False, False),
    (2, "Base Two", "Checkpoint", "alice", 500, True, False),
    (3, "XL Base", "Checkpoint", "bob", 300, False, False),
    (4, "Red Style", "LORA", "bob", 200, False, False),
    (5, "Red Copy", "LORA", "carol", 50, False, False),
    (6, "XL Red", "LORA", "carol", 20, False, False),
    (7, "Neg", "TextualInversion", None, 10, False, False),
    (8, "Gone", "LORA", "carol", 5, False, True),
]
VERSIONS = [  # id, model, position, base model, trained words, created_at, published_at
    (11, 1, 0, "SD 1.5", ["redstyle"], "2023-03-01T00:00:00Z", "2023-03-10T12:00:00Z"),
    (21, 2, 0, "SD 1.5", [], "2023-03-20T00:00:00Z", None),
    (31, 3, 0, "SDXL 1.0", [], "2023-04-01T00:00:00Z", "2023-04-02T00:00:00Z"),
    (41, 4, 0, "SD 1.5", ["redstyle"], "2023-04-01T00:00:00Z", "2023-04-05T00:00:00Z"),
    (42, 4, 1, "SD 1.5", ["RedStyle "], "2023-03-01T00:00:00Z", None),
    (51, 5, 0, "SD 1.5", ["redstyle"], "2023-04-20T00:00:00Z", None),
    (61, 6, 0, "SDXL 1.0", ["redstyle"], "2023-04-29T00:00:00Z", "2023-04-30T23:30:00-02:00"),
    (71, 7, 0, "SD 1.5", ["neg"], "2023-02-01T00:00:00Z", None),
    (81, 8, 0, "SD 1.5", ["gone"], "2023-01-15T00:00:00Z", None),
]
FILES = [  # id, version, name, primary, sha256, autov2, type
    (111, 11, "base_one.safetensors", True, "D4" * 32, None, "Model"),
    (211, 21, "base_two.safetensors", True, "E5" * 32, None, "Model"),
    (311, 31, "xl_base.safetensors", True, "F6" * 32, None, "Model"),
    (312, 31, "xl_base_fp16.safetensors", False, ALIKE_1, ALIKE_1[:10], "Pruned Model"),
    (313, 31, "sdxl_vae.safetensors", False, VAE, VAE[:10], "VAE"),
    (411, 41, "red_style.safetensors", True, S1, S1[:10], "Model"),
    (412, 41, "red_style_v0.safetensors", False, S2, None, "Model"),
    (421, 42, "red_style_v0.safetensors", True, S2, S2[:10], "Model"),
    (511, 51, "red_copy.safetensors", True, S1, None, "Model"),
    (611, 61, "xl_red.safetensors", True, "A7" * 32, None, "Model"),
    (612, 61, "xl_red_fp16.safetensors", False, ALIKE_2, ALIKE_2[:10], "Model"),
    (613, 61, "sdxl_vae.safetensors", False, VAE, VAE[:10], "VAE"),
    (711, 71, "neg.pt", True, None, "BBBBBBBBBB", "Model"),
    (811, 81, "gone.pt", True, None, "BBBBBBBBBB", "Model"),
]
LINKS = [  # adapter, checkpoint, images, SFW images, average weight, images giving a weight
    (41, 11, 5, 4, 0.8, 4),
    (41, 21, 3, 0, 0.6, 2),
    (41, 31, 1, 1, None, 0),
    (51, 11, 2, 2, 1.0, 2),
]
DESCRIPTIONS = [  # version, describer, prompt version, text, kind, trigger words, weight
    (41, "vlm:test", "1", "A red painterly style.", "style", ["redstyle"], 0.8),
    (41, "card-text", "1", "Red Style card text.", "concept", ["redstyle"], 1.0),
    (42, "vlm:test", "0", "An older prompt's description.", "style", ["old"], 0.5),
    (51, "card-text", "1", "Red Copy card text.", "style", ["redstyle", "crimson"], 1.0),
    (11, "vlm:test", "1", "A general SD 1.5 checkpoint.", "checkpoint", [], 1.0),
]


def _insert(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    names = ", ".join(columns)
    values = ", ".join(f":{c}" for c in columns)
    conn.execute(text(f"INSERT INTO {table} ({names}) VALUES ({values})"), [dict(zip(columns, r)) for r in rows])


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@pytest.fixture(scope="module")
def zoo(engine: Engine) -> Engine:
    """The zoo above, in the module's fresh database, with KEY recorded as the preferred describer."""
    deleted_at = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with engine.begin() as conn:
        _insert(conn, "models", ("id", "name", "type", "creator", "download_count", "nsfw", "nsfw_flag",
                                 "nsfw_reason", "schema_era", "deleted_at", "allow_commercial_use",
                                 "allow_no_credit", "allow_derivatives", "allow_different_license"),
                [(i, name, kind, creator, downloads, nsfw, nsfw, "flag" if nsfw else "sfw", "2023",
                  deleted_at if deleted else None, ["Image"] if i == 4 else [], i == 4, True, False)
                 for i, name, kind, creator, downloads, nsfw, deleted in MODELS])
        _insert(conn, "model_versions", ("id", "model_id", "position", "name", "base_model", "base_model_family",
                                         "trained_words", "created_at", "published_at", "download_count"),
                [(v, m, p, f"v{v}", base, base_model_family(base), words, _when(created), _when(published), v)
                 for v, m, p, base, words, created, published in VERSIONS])
        _insert(conn, "model_files", ("id", "version_id", "name", "name_stem", "is_primary", "sha256", "autov2",
                                      "type"),
                [(f, v, name, name.rsplit(".", 1)[0], primary, sha, autov2, kind)
                 for f, v, name, primary, sha, autov2, kind in FILES])
        families = {v: base_model_family(base) for v, _, _, base, *_ in VERSIONS}
        _insert(conn, "adapter_checkpoint_links", ("adapter_version_id", "checkpoint_version_id", "image_count",
                                                   "sfw_image_count", "avg_weight", "weighted_image_count",
                                                   "adapter_family", "checkpoint_family", "family_compatible"),
                [(a, c, n, sfw, w, nw, families[a], families[c], families[a] == families[c])
                 for a, c, n, sfw, w, nw in LINKS])
        _insert(conn, "descriptions", ("version_id", "describer", "prompt_version", "input_sha", "text", "kind",
                                       "trigger_words", "recommended_weight"),
                [(v, d, p, "test", body, kind, words, w) for v, d, p, body, kind, words, w in DESCRIPTIONS])
        record_preferred_describer(conn, KEY)
    return engine


def _rows(engine: Engine, query: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(text(query)).mappings()]


def test_version_cards_one_row_per_served_version_with_the_preferred_description(zoo: Engine):
    cards = {row["version_id"]: row for row in _rows(zoo, "SELECT * FROM version_cards")}
    assert sorted(cards) == [11, 31, 41, 42, 51, 61, 71]  # 21 is NSFW, 81 deleted
    red = cards[41]
    assert (red["kind"], red["trigger_words"], red["recommended_weight"], red["description"], red["describer"],
            red["describer_prompt_version"]) == ("style", ["redstyle"], 0.8, "A red painterly style.", "vlm:test", "1")
    assert (red["model_name"], red["model_type"], red["base_model"], red["base_model_family"], red["creator"]) == (
        "Red Style", "LORA", "SD 1.5", "SD1.x", "bob")
    assert (red["model_download_count"], red["version_download_count"]) == (200, 41)
    assert (red["allow_commercial_use"], red["allow_no_credit"], red["allow_derivatives"],
            red["allow_different_license"]) == (["Image"], True, True, False)
    assert (red["primary_file_id"], red["primary_file_name"], red["sha256"], red["autov2"]) == (
        411, "red_style.safetensors", S1, S1[:10])
    assert red["civitai_url"] == "https://civitai.com/models/4?modelVersionId=41"
    assert (cards[51]["describer"], cards[51]["trigger_words"]) == ("card-text", ["redstyle", "crimson"])  # fallback
    assert cards[42]["kind"] is None and cards[42]["description"] is None  # only an old prompt version's text
    assert cards[71]["sha256"] is None and cards[71]["autov2"] == "BBBBBBBBBB"


def test_version_cards_and_the_python_callers_apply_one_rule(zoo: Engine):
    with zoo.connect() as conn:
        from_python = preferred_description_rows(conn, KEY)
    from_view = {row["version_id"]: (row["describer"], row["description"]) for row in
                 _rows(zoo, "SELECT version_id, describer, description FROM version_cards WHERE kind IS NOT NULL")}
    assert from_view == {v: (row["describer"], row["text"]) for v, row in from_python.items()}


def test_recording_another_describer_changes_what_version_cards_shows(zoo: Engine):
    with zoo.begin() as conn:
        record_preferred_describer(conn, DescriberKey("card-text", "1", "card-text", "1"))
    try:
        red = _rows(zoo, "SELECT describer, kind FROM version_cards WHERE version_id = 41")
        assert red == [{"describer": "card-text", "kind": "concept"}]
        assert _rows(zoo, "SELECT count(*) AS n FROM preferred_describer") == [{"n": 1}]
    finally:
        with zoo.begin() as conn:
            record_preferred_describer(conn, KEY)


def test_the_describe_step_records_its_key_for_version_cards(zoo: Engine):
    describer = CardTextDescriber()
    try:
        assert describe_pending(zoo, describer).described == 7
        shown = _rows(zoo, "SELECT DISTINCT describer, describer_prompt_version AS version FROM version_cards")
        assert shown == [{"describer": describer.name, "version": describer.prompt_version}]
    finally:
        with zoo.begin() as conn:
            conn.execute(text("DELETE FROM descriptions WHERE prompt_version = :version"),
                         {"version": describer.prompt_version})
            record_preferred_describer(conn, KEY)


def test_adapter_compatibility_per_adapter_and_checkpoint_family(zoo: Engine):
    rows = _rows(zoo, "SELECT adapter_version_id, checkpoint_family, family_compatible, checkpoints, "
                      "checkpoint_models, images, sfw_images, avg_weight, top_checkpoint_version_id "
                      "FROM adapter_compatibility ORDER BY adapter_version_id, checkpoint_family")
    assert [tuple(r.values())[:7] + (r["top_checkpoint_version_id"],) for r in rows] == [
        (41, "SD1.x", True, 2, 2, 8, 4, 11),
        (41, "SDXL", False, 1, 1, 1, 1, 31),
        (51, "SD1.x", True, 1, 1, 2, 2, 11),
    ]
    assert [r["avg_weight"] for r in rows] == [pytest.approx((0.8 * 4 + 0.6 * 2) / 6), None, pytest.approx(1.0)]


def test_trigger_word_collisions_between_models_of_one_family(zoo: Engine):
    rows = _rows(zoo, "SELECT * FROM trigger_word_collisions ORDER BY base_model_family, trigger_word")
    # v41 and v51 by their descriptions, v42 by its trained words; the checkpoint (v11) and the SDXL LoRA (v61)
    # use the word too but are not adapters of SD1.x; 'crimson' is one model's only.
    assert rows == [{"base_model_family": "SD1.x", "trigger_word": "redstyle", "adapters": 2, "versions": 3,
                     "model_ids": [4, 5], "model_names": ["Red Copy", "Red Style"], "version_ids": [41, 42, 51]}]


def test_duplicate_uploads_by_sha256_or_autov2(zoo: Engine):
    rows = _rows(zoo, "SELECT * FROM duplicate_uploads ORDER BY autov2")
    assert rows == [
        {"autov2": S1[:10], "sha256": S1, "models": 2, "versions": 2, "files": 2, "first_model_id": 4,
         "first_version_id": 41, "model_ids": [4, 5], "file_names": ["red_copy.safetensors", "red_style.safetensors"]},
        {"autov2": "BBBBBBBBBB", "sha256": None, "models": 2, "versions": 2, "files": 2, "first_model_id": 8,
         "first_version_id": 81, "model_ids": [7, 8], "file_names": ["gone.pt", "neg.pt"]},
    ]  # S2 stays within model 4; files 312 and 612 share an AutoV2 but not their SHA256; the VAE is no model file


def test_creator_stats(zoo: Engine):
    rows = {r.pop("creator"): r for r in _rows(zoo, "SELECT * FROM creator_stats")}
    assert set(rows) == {"alice", "bob", "carol"}  # model 7 names no creator
    assert {name: (r["models"], r["versions"], r["downloads"], r["nsfw_models"], float(r["nsfw_share"]),
                   r["deleted_models"]) for name, r in rows.items()} == {
        "alice": (2, 2, 1500, 1, 0.5, 0), "bob": (2, 3, 500, 0, 0.0, 0), "carol": (3, 3, 75, 0, 0.0, 1)}
    assert (rows["bob"]["first_upload"].date(), rows["bob"]["last_upload"].date()) == (date(2023, 3, 1),
                                                                                       date(2023, 4, 5))


def test_base_model_trends_by_published_else_created_month(zoo: Engine):
    rows = _rows(zoo, "SELECT base_model, month, models, new_models, versions, versions_by_created_date "
                      "FROM base_model_trends ORDER BY base_model, month")
    assert [tuple(r.values()) for r in rows] == [
        ("SD 1.5", date(2023, 1, 1), 1, 1, 1, 1),
        ("SD 1.5", date(2023, 2, 1), 1, 1, 1, 1),
        ("SD 1.5", date(2023, 3, 1), 3, 3, 3, 2),  # v11, v21*, v42*: model 4 starts here
        ("SD 1.5", date(2023, 4, 1), 2, 1, 2, 1),  # v41 (model 4 is not new), v51*
        ("SDXL 1.0", date(2023, 4, 1), 1, 1, 1, 0),
        ("SDXL 1.0", date(2023, 5, 1), 1, 1, 1, 0),  # 23:30 on 30 April at UTC-2 is May in UTC
    ]
