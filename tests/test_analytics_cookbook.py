"""Every query of the SQL cookbook (docs/analytics.md) runs against a test zoo and answers something.

The zoo: the 2023 and 2024 fixtures refreshed through the catalogue job and described by the card-text describer,
plus a twin of one LoRA (the same file and trigger words under another model: a duplicate upload and a trigger-word
collision), added by a second refresh that also rewrites one model's card (history). The queries are read out of the
document the way bench/analytics_report.py reads them, so the page and the test cannot drift apart.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, text

from db.reader_role import READER_ROLE
from embedding.describers import CardTextDescriber
from embedding.refresh import describe_pending
from helpers import read_jsonl
from orchestration.run import run_refresh

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.analytics_report import DOC, cell, markdown_table, questions  # noqa: E402

ITEMS = read_jsonl("civitai_2023.jsonl") + read_jsonl("civitai_2024.jsonl")
TWIN_OFFSET = 10**9
QUERIES = questions(DOC.read_text(encoding="utf-8"))


def twin_of(item: dict) -> dict:
    """Another model carrying the same files and trained words under new ids."""
    twin = copy.deepcopy(item)
    twin["id"] += TWIN_OFFSET
    twin["name"] = f"{item['name']} (re-upload)"
    for version in twin["modelVersions"]:
        version["id"] += TWIN_OFFSET
        version.pop("modelId", None)
        for file in version.get("files", []):
            file["id"] += TWIN_OFFSET
    return twin


def write_dump(path: Path, items: list[dict]) -> str:
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
    return str(path)


@pytest.fixture(scope="module")
def zoo(settings, engine: Engine, tmp_path_factory) -> Engine:
    folder = tmp_path_factory.mktemp("cookbook")
    assert run_refresh(settings, dump_path=write_dump(folder / "first.jsonl", ITEMS), workers=1).success
    lora = next(item for item in ITEMS if item["type"] == "LORA" and not item.get("nsfw")
                and item["modelVersions"][0].get("trainedWords"))
    rewritten = [{**item, "description": "<p>A rewritten card.</p>"} if item is lora else item for item in ITEMS]
    assert run_refresh(settings, dump_path=write_dump(folder / "second.jsonl", rewritten + [twin_of(lora)]),
                       workers=1).success
    describe_pending(engine, CardTextDescriber())
    return engine


def test_the_cookbook_asks_at_least_twelve_questions_and_draws_its_charts() -> None:
    assert len(QUERIES) >= 12
    assert {query.chart for query in QUERIES if query.chart} == {
        "models_per_base_model_per_month", "nsfw_share_by_type", "co_usage_hubs"}
    document = DOC.read_text(encoding="utf-8")
    for query in QUERIES:
        if query.chart:
            assert f"(img/{query.chart}.png)" in document
            assert (DOC.parent / "img" / f"{query.chart}.png").is_file()


@pytest.mark.parametrize("query", QUERIES, ids=[f"q{n}" for n in range(1, len(QUERIES) + 1)])
def test_every_cookbook_query_answers_on_the_test_zoo(zoo: Engine, query) -> None:
    with zoo.connect() as conn:  # as analysts run it: the read-only role, in a read-only transaction
        conn.execute(text("SET TRANSACTION READ ONLY"))
        conn.execute(text(f"SET LOCAL ROLE {READER_ROLE}"))
        rows = conn.execute(text(query.sql)).all()
    assert rows, f"no answer on the test zoo:\n{query.sql}"


def test_history_queries_see_the_second_refresh(zoo: Engine) -> None:
    with zoo.connect() as conn:
        changes = conn.execute(text(
            "SELECT change, fields, count(*) FROM recent_changes WHERE run_id = (SELECT max(run_id) FROM "
            "model_changes) GROUP BY change, fields ORDER BY change")).all()
    assert [tuple(row) for row in changes] == [("added", [], 1), ("changed", ["description"], 1)]


def test_answers_are_rendered_as_markdown_tables() -> None:
    assert cell(None) == "" and cell(1234567) == "1,234,567" and cell(0.25) == "0.25" and cell(True) == "yes"
    assert cell(list(range(5))) == "0, 1, 2, … (5)" and cell("a|b") == "a\\|b"
    assert len(cell("x" * 500)) == 60
    assert markdown_table(["a", "b"], []) == "_(no rows)_"
    assert markdown_table(["a", "b"], [(1, "x")]).splitlines() == ["| a | b |", "|---|---|", "| 1 | x |"]
