"""Retrieval on the shipped snapshot (real MiniLM weights): known answers, filters, NSFW exclusion, incremental
describe/embed on refresh, and the search command line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from config import Settings
from crawlers.dump import snapshot_path
from orchestration.run import refresh_zoo
from serving.search import open_retriever
from serving.search import Filters, Retriever, Weights


@pytest.fixture(scope="module")
def zoo(engine, database_url: str, monkeypatch_module):
    monkeypatch_module.setenv("DATABASE_URL", database_url)
    outcome = refresh_zoo(Settings.from_env(), dump_path=str(snapshot_path()), database_url=database_url, workers=1)
    assert outcome.success, outcome.failures()
    return outcome


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def retriever(zoo) -> Retriever:
    return open_retriever(Settings.from_env())


@pytest.mark.parametrize(("prompt", "checkpoint"), [
    ("pixel art castle on a hill", "Bitforge Pixel Art"),
    ("ink wash mountains in the mist", "Sumi River Ink"),
    ("anime girl in a knitted winter sweater", "Lumen Anime Blend"),
    ("a watercolor painting of a lighthouse at dusk", "Wetpaper Watercolor"),
    ("a photo of a city street at night, realistic", "Northfield Photoreal"),  # not the most downloaded one
])
def test_the_right_checkpoint_comes_first(retriever: Retriever, prompt: str, checkpoint: str) -> None:
    assert retriever.search(prompt).checkpoints[0].name == checkpoint


@pytest.mark.parametrize(("prompt", "adapter"), [
    ("anime girl in a knitted winter sweater", "Knitted Winter Sweaters"),
    ("a scientist wearing brass steampunk goggles", "Steampunk Goggles"),
    ("a ceramic teapot on a wooden table", "Ceramic Teapots"),
])
def test_the_right_adapter_is_in_the_top_three(retriever: Retriever, prompt: str, adapter: str) -> None:
    assert adapter in [hit.name for hit in retriever.search(prompt, top_k=3).adapters]


def test_the_query_words_find_what_similarity_misses(retriever: Retriever) -> None:
    """'linocut' names the Linocut Print LoRA; MiniLM similarity and usage alone rank it below the top five."""
    prompt = "a fox, linocut"
    without_words = copy.copy(retriever)
    without_words.weights = Weights(checkpoint_lexical=0.0, adapter_lexical=0.0)
    assert "Linocut Print" not in [hit.name for hit in without_words.search(prompt, top_k=5).adapters]
    hit = retriever.search(prompt, top_k=5).adapters[0]
    assert hit.name == "Linocut Print"
    assert hit.matched_words == ["linocut"] and hit.lexical == 1.0 and "words: linocut" in hit.why


@pytest.mark.parametrize("prompt", [
    "it's Tobiah's \\ back'slash", "linocut & fox | !moss <-> :* (x:1.2)", "'''", "\\", "<lora:x:1>, (((", "日本語 ünïcode",
])
def test_text_search_syntax_in_a_query_is_plain_words(retriever: Retriever, prompt: str) -> None:
    result = retriever.search(prompt, top_k=3)
    assert result.checkpoints and len(result.adapters) == 3
    assert all(isinstance(word, str) for hit in result.adapters for word in hit.matched_words)


def test_the_lexicon_counts_each_word_once_per_text(zoo, engine, retriever: Retriever) -> None:
    with engine.connect() as conn:
        corpus = dict(conn.execute(text(
            "SELECT role, documents FROM lexical_corpus WHERE space = :s"), {"s": retriever.space}).all())
        vectors = dict(conn.execute(text(
            "SELECT role, count(*) FROM embeddings WHERE space = :s GROUP BY role"), {"s": retriever.space}).all())
        frequencies = conn.execute(text(
            "SELECT t.lexeme, t.documents, (SELECT count(*) FROM embeddings e WHERE e.space = t.space "
            "AND e.role = t.role AND e.lexemes @@ CAST(quote_literal(t.lexeme) AS tsquery)) FROM lexical_terms t "
            "WHERE t.space = :s AND t.role = 'adapter' AND t.lexeme IN ('linocut', 'lora', 'sweater')"),
            {"s": retriever.space}).all()
    assert corpus == vectors
    assert {word for word, _, _ in frequencies} == {"linocut", "lora", "sweater"}
    assert all(stored == counted for _, stored, counted in frequencies)


def test_vectors_stored_without_words_get_them_without_re_encoding(engine, retriever: Retriever) -> None:
    from embedding.describers import CardTextDescriber
    from embedding.refresh import embed_pending

    with engine.begin() as conn:
        before = dict(conn.execute(text(
            "SELECT version_id, lexemes::text FROM embeddings WHERE role = 'adapter' ORDER BY version_id LIMIT 2"
        )).all())
        conn.execute(text("UPDATE embeddings SET lexemes = NULL, lexical_length = 0 WHERE version_id = ANY(:ids)"),
                     {"ids": list(before)})
    counts = embed_pending(engine, CardTextDescriber(), retriever.text_encoder)
    assert (counts.embedded, counts.words_added) == (0, 2)
    with engine.connect() as conn:
        after = dict(conn.execute(text(
            "SELECT version_id, lexemes::text FROM embeddings WHERE version_id = ANY(:ids) AND lexical_length > 0"),
            {"ids": list(before)}).all())
    assert after == before


def test_hits_carry_what_a_caller_needs(retriever: Retriever) -> None:
    result = retriever.search("anime girl in a knitted winter sweater", top_k=5)
    hit = result.adapters[0]
    assert hit.model_id and hit.version_id and hit.type == "LORA" and hit.base_model == "SD 1.5"
    assert hit.kind in ("style", "character", "object", "clothing", "concept", "pose", "background", "other")
    assert hit.recommended_weight is not None and 0 < hit.recommended_weight <= 2
    assert hit.download_url and "similarity" in hit.why
    assert [h.score for h in result.adapters] == sorted((h.score for h in result.adapters), reverse=True)
    assert sum(len(v) for v in result.adapters_by_kind.values()) == len(result.adapters)


def test_nsfw_models_have_no_vectors_and_are_never_returned(zoo, engine, retriever: Retriever) -> None:
    with engine.connect() as conn:
        nsfw_vectors = conn.execute(text(
            "SELECT count(*) FROM embeddings e JOIN model_versions v ON v.id = e.version_id "
            "JOIN models m ON m.id = v.model_id WHERE m.nsfw")).scalar_one()
        nsfw_names = set(conn.execute(text("SELECT name FROM models WHERE nsfw")).scalars())
    assert nsfw_vectors == 0 and nsfw_names
    result = retriever.search("boudoir soft light photo", top_k=30, top_checkpoints=10)
    assert not nsfw_names & {hit.name for hit in result.checkpoints + result.adapters}


def test_filters(retriever: Retriever) -> None:
    prompt = "a watercolor painting of a lighthouse at dusk"
    assert retriever.search(prompt, filters=Filters(base_models=("SDXL 1.0",))).checkpoints == []
    assert retriever.search(prompt, filters=Filters(types=("TextualInversion",))).adapters == []
    selling = retriever.search(prompt, top_k=20, filters=Filters(commercial_use="Sell"))
    assert selling.adapters and all("Sell" in hit.name or True for hit in selling.adapters)
    with retriever.db.connect() as conn:
        allowed = set(conn.execute(text(
            "SELECT version_id FROM served_model_versions WHERE 'Sell' = ANY(allow_commercial_use)")).scalars())
    assert {hit.version_id for hit in selling.adapters + selling.checkpoints} <= allowed
    popular = retriever.search(prompt, top_k=20, filters=Filters(min_downloads=20000))
    assert popular.adapters and all(hit.downloads >= 20000 for hit in popular.adapters)


def test_a_query_needs_text_or_an_image(retriever: Retriever) -> None:
    with pytest.raises(ValueError):
        retriever.search("")
    with pytest.raises(ValueError, match="no image encoder"):
        retriever.search(None, image=object())


def test_a_changed_card_re_describes_and_re_embeds_one_version(zoo, engine, database_url: str, tmp_path: Path) -> None:
    lines = snapshot_path().read_text(encoding="utf-8").splitlines()
    item = json.loads(lines[7])
    item["description"] = "<p>Bold linocut relief prints with thick carved lines, now with a paper texture.</p>"
    lines[7] = json.dumps(item, ensure_ascii=False)
    dump = tmp_path / "changed.jsonl"
    dump.write_text("\n".join(lines) + "\n", encoding="utf-8")

    outcome = refresh_zoo(Settings.from_env(), dump_path=str(dump), database_url=database_url, workers=1)
    assert outcome.success
    metadata = outcome.materializations()
    described = sum(v["described"] for k, v in metadata.items() if k.startswith("adapter_descriptions["))
    embedded = sum(v["embedded"] for k, v in metadata.items() if k.startswith("zoo_embeddings["))
    assert (described, embedded) == (1, 1)

    again = refresh_zoo(Settings.from_env(), dump_path=str(dump), database_url=database_url,
                        workers=1).materializations()
    assert sum(v["described"] for k, v in again.items() if k.startswith("adapter_descriptions[")) == 0
    assert sum(v["embedded"] for k, v in again.items() if k.startswith("zoo_embeddings[")) == 0


# ---------------------------------------------------------------- the command line

def test_zoo_search_json(zoo, capsys) -> None:
    from cli.main import main

    assert main(["search", "pixel art castle on a hill", "--json", "--top-k", "4"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["checkpoints"][0]["name"] == "Bitforge Pixel Art"
    assert len(answer["adapters"]) == 4
    assert {"model_id", "version_id", "name", "type", "kind", "base_model", "score", "trigger_words",
            "recommended_weight", "download_url", "why"} <= set(answer["adapters"][0])


def test_zoo_search_queries_file_answers_every_line(zoo, capsys, tmp_path: Path) -> None:
    from cli.main import main

    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join([
        json.dumps({"qid": "a", "query": "ink wash mountains in the mist"}),
        "not json",
        json.dumps({"qid": "c", "query": ""}),
        json.dumps({"qid": 4, "query": "anime girl in a knitted winter sweater"}),
    ]) + "\n", encoding="utf-8")
    assert main(["search", "--queries", str(queries), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["qid"] for line in lines] == ["a", 2, "c", 4]
    assert lines[0]["checkpoints"][0]["name"] == "Sumi River Ink"
    assert "error" in lines[1] and "error" in lines[2]
    assert lines[3]["adapters"]


def test_hostile_query_lines_get_error_lines_and_the_batch_goes_on(zoo, capsys, tmp_path: Path) -> None:
    """A NUL byte in a query, a line that is not UTF-8 and a lone surrogate in a qid: every line is answered."""
    from cli.main import main

    queries = tmp_path / "queries.jsonl"
    queries.write_bytes(b'{"qid": "nul", "query": "ink wash\\u0000 mountains"}\n'
                        b'\xff\xfe not utf-8\n'
                        b'{"qid": "\\udc80", "query": "pixel art castle"}\n'
                        + ("x" * 100_000).encode() + b"\n")
    assert main(["search", "--queries", str(queries), "--json", "--top-k", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["qid"] for line in lines] == ["nul", 2, "\udc80", 4]
    assert lines[0]["adapters"] and "UnicodeDecodeError" in lines[1]["error"] and lines[2]["checkpoints"]
    assert "JSONDecodeError" in lines[3]["error"]


def test_search_errors_say_what_to_do(zoo, capsys) -> None:
    from cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["search", "x", "--commercial-use", "Foo"])
    assert exit_info.value.code == 2 and "Sell" in capsys.readouterr().err
    assert main(["search", "a castle", "--base-models", "SDXL 1.0"]) == 0
    message = capsys.readouterr().err
    message = " ".join(message.split())
    assert "nothing in the zoo passes these filters" in message and "SD 1.5" in message
    assert main(["search", "--image", "castle.png"]) == 2
    assert "needs an image encoder" in " ".join(capsys.readouterr().err.split())


def test_zoo_search_usage_errors(zoo) -> None:
    from cli.main import main

    assert main(["search"]) == 2
    assert main(["search", "x", "--top-k", "0"]) == 2
    assert main(["search", "--image", "/nonexistent.png"]) == 2


def test_zoo_search_rerank_orders_adapters_by_the_tree_rerank(zoo, capsys) -> None:
    pytest.importorskip("gguf")
    from cli.main import main

    assert main(["search", "anime girl in a knitted winter sweater", "--rerank", "--json", "--top-k", "6"]) == 0
    adapters = json.loads(capsys.readouterr().out)["adapters"]
    assert len(adapters) == 6 and all(hit["rerank_score"] is not None for hit in adapters)
    order = [(-hit["rerank_round"], -hit["rerank_score"]) for hit in adapters]
    assert order == sorted(order)
