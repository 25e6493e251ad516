"""The HTTP API (serving/http) on the shipped snapshot's zoo in a real Postgres: every read endpoint, the CLI verbs
that call the same functions, problem+json for every error, limits, the token, CORS, metrics and OpenAPI. The
studio is switched off here (ZOO_STUDIO=off): generate/edit answer the documented 503; tests/test_http_jobs.py runs
real jobs. Last, schemathesis generates requests from the published OpenAPI schema: no undeclared status (no 5xx
but the documented 503s), every response as its schema says."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from schemathesis.core.failures import FailureGroup
from PIL import Image
from sqlalchemy import text

from cli.main import main
from config import Settings
from crawlers.dump import snapshot_path
from orchestration.run import refresh_zoo
from serving.http import create_app
from serving.search import open_retriever
from serving.studio.png_info import encode_png

PROMPT = "pixel art castle on a hill"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def zoo_settings(engine, database_url: str, monkeypatch_module) -> Settings:
    monkeypatch_module.setenv("DATABASE_URL", database_url)
    monkeypatch_module.setenv("ZOO_STUDIO", "off")
    settings = Settings.from_env()
    outcome = refresh_zoo(settings, dump_path=str(snapshot_path()), database_url=database_url, workers=1)
    assert outcome.success, outcome.failures()
    return settings


@pytest.fixture(scope="module")
def retriever(zoo_settings):
    return open_retriever(zoo_settings)


def _client(settings: Settings, retriever, **changes) -> TestClient:
    return TestClient(create_app(dataclasses.replace(settings, **changes), retriever=retriever,
                                 reranker=lambda prompt, hits: list(reversed(hits))))


@pytest.fixture(scope="module")
def client(zoo_settings, retriever):
    with _client(zoo_settings, retriever) as client:
        yield client


@pytest.fixture(scope="module")
def ids(engine, zoo_settings) -> dict:
    """Versions of the snapshot by name, and their primary files."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT v.id, m.name, m.type, m.nsfw, f.name AS file, f.sha256, f.autov2, m.id AS model_id "
            "FROM model_versions v JOIN models m ON m.id = v.model_id "
            "JOIN model_files f ON f.version_id = v.id AND f.is_primary ORDER BY v.id")).mappings().all()
    return {row["name"]: dict(row) for row in rows}


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["schema_version"] == "1"
    assert "Traceback" not in response.text
    return body


# ---- search -------------------------------------------------------------------------------------------------------

def test_search_answers_the_cli_hits_with_tags_and_pages(client, capsys):
    body = client.get("/v1/search", params={"q": PROMPT, "top_k": 5}).json()
    assert body["schema_version"] == "1" and body["query"] == PROMPT
    assert body["checkpoints"][0]["name"] == "Bitforge Pixel Art"
    assert body["adapters_for"]["version_id"] == body["checkpoints"][0]["version_id"]
    assert body["adapters"] and body["filters"]["max_content_level"] == "PG-13"
    for hit in body["adapters"]:
        assert hit["civitai_url"] == (f"https://civitai.com/models/{hit['model_id']}"
                                      f"?modelVersionId={hit['version_id']}")
        assert hit["lora_tag"].startswith(f"<lora:{hit['file_name'].rsplit('.', 1)[0]}:") or hit["type"] not in (
            "LORA", "LoCon", "DoRA", "LyCORIS")
    assert main(["search", PROMPT, "--json", "--top-k", "5"]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for level in ("checkpoints", "adapters", "negatives"):
        assert [h["version_id"] for h in body[level]] == [h["version_id"] for h in cli[level]]
        for api_hit, cli_hit in zip(body[level], cli[level], strict=True):
            assert {k: api_hit[k] for k in cli_hit} == cli_hit


def test_search_takes_large_top_k_and_filters(client):
    body = client.get("/v1/search", params={"q": PROMPT, "top_k": 100, "checkpoints": 50, "type": ["LORA"],
                                            "base_model": "SD 1.5", "max_content_level": "PG",
                                            "min_downloads": 1}).json()
    assert body["filters"] == {"base_model": ["SD 1.5"], "type": ["LORA"], "commercial_use": None,
                               "min_downloads": 1, "max_content_level": "PG"}
    assert all(hit["type"] == "LORA" and hit["content_level"] == "PG" for hit in body["adapters"])
    assert len(body["checkpoints"]) >= 4


@pytest.mark.parametrize(("params", "field", "allowed"), [
    ({"type": "Wildcards"}, "type", "LORA"),
    ({"base_model": "SDXL 9000"}, "base_model", "SD 1.5"),
    ({"commercial_use": "Steal"}, "commercial_use", "Sell"),
    ({"max_content_level": "R"}, "max_content_level", "PG-13"),
])
def test_unknown_filter_values_are_answered_with_the_allowed_ones(client, params, field, allowed):
    body = _problem(client.get("/v1/search", params={"q": PROMPT, **params}), 422)
    assert allowed in body["allowed"][field]
    assert "R" not in body["allowed"].get("max_content_level", [])


@pytest.mark.parametrize("params", [
    {"q": PROMPT, "top_k": 0}, {"q": PROMPT, "top_k": 10**9}, {"q": PROMPT, "checkpoints": 101},
    {"q": "x" * 4001}, {"q": "castle\x00"}, {}, {"q": PROMPT, "min_downloads": -1}, {"q": PROMPT, "rerank": "maybe"},
])
def test_bad_search_input_is_a_422_problem(client, params):
    _problem(client.get("/v1/search", params=params), 422)


def test_search_by_upload_needs_an_image_encoder_and_an_image(client):
    png = encode_png(Image.new("RGB", (32, 32), "red"), "")
    body = _problem(client.post("/v1/search", data={"q": PROMPT}, files={"image": ("a.png", png, "image/png")}), 422)
    assert "image encoder" in body["detail"]
    _problem(client.post("/v1/search", data={"q": PROMPT}, files={"image": ("a.png", b"not an image", "image/png")}),
             422)
    assert client.post("/v1/search", data={"q": PROMPT, "top_k": "3"}).json()["checkpoints"]


def test_rerank_reorders_the_adapters(client):
    plain = client.get("/v1/search", params={"q": PROMPT, "top_k": 4}).json()["adapters"]
    reranked = client.get("/v1/search", params={"q": PROMPT, "top_k": 4, "rerank": True}).json()["adapters"]
    assert [h["version_id"] for h in reranked] == [h["version_id"] for h in reversed(plain)]


def test_adapters_for_my_checkpoint(client, ids, capsys):
    ink = ids["Sumi River Ink"]["id"]
    body = client.get(f"/v1/checkpoints/{ink}/adapters", params={"q": "mountains in mist", "top_k": 5}).json()
    assert body["adapters_for"]["version_id"] == ink and body["checkpoints"] == []
    assert body["adapters"] and all(hit["base_model_family"] == "SD1.x" for hit in body["adapters"])
    assert client.get(f"/v1/checkpoints/{ink}/adapters").json()["adapters"]  # no query: by use and popularity
    assert main(["search", "mountains in mist", "--for-checkpoint", str(ink), "--top-k", "5", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [h["version_id"] for h in cli["adapters"]] == [h["version_id"] for h in body["adapters"]]
    _problem(client.get(f"/v1/checkpoints/{ids['Linocut Print']['id']}/adapters"), 422)  # a LoRA
    _problem(client.get("/v1/checkpoints/123456789/adapters"), 404)
    _problem(client.get(f"/v1/checkpoints/{ids['Afterhours Photoreal']['id']}/adapters"), 404)  # NSFW


# ---- catalogue ----------------------------------------------------------------------------------------------------

def test_version_card(client, ids):
    lino = ids["Linocut Print"]
    card = client.get(f"/v1/versions/{lino['id']}").json()
    assert card["name"] == "Linocut Print" and card["role"] and card["content_level"] in ("PG", "PG-13")
    assert card["description"] and card["trigger_words"] and card["recommended_weight"] > 0
    assert card["files"][0]["hashes"]["sha256"] == lino["sha256"]
    assert card["lora_tag"].startswith("<lora:linocutPrint_v2:")
    assert card["civitai_url"].endswith(f"modelVersionId={lino['id']}")
    assert all(image["content_level"] in ("PG", "PG-13") for image in card["images"])
    assert card["used_with_adapters"] == []
    checkpoint = client.get(f"/v1/versions/{ids['Bitforge Pixel Art']['id']}").json()
    assert checkpoint["used_with_checkpoints"] == [] and checkpoint["lora_tag"] is None


def test_cards_hide_what_is_not_served(client, ids):
    for name in ("Afterhours Photoreal", "Boudoir Soft Light"):  # NSFW models
        _problem(client.get(f"/v1/versions/{ids[name]['id']}"), 404)
        _problem(client.get(f"/v1/models/{ids[name]['model_id']}"), 404)
    _problem(client.get("/v1/versions/1"), 404)
    _problem(client.get("/v1/versions/abc"), 422)
    _problem(client.get(f"/v1/versions/{2**63}"), 422)


def test_model_card(client, ids):
    juniper = ids["Juniper Vale, Sky Courier (OC)"]
    card = client.get(f"/v1/models/{juniper['model_id']}").json()
    assert card["name"].startswith("Juniper Vale") and len(card["versions"]) == 2
    assert card["latest"]["version_id"] == card["versions"][0]["version_id"]


@pytest.mark.parametrize("kind", ["sha256", "sha256-lower", "autov2", "file", "file-path"])
def test_lookup_by_any_hash_kind_or_file_name(client, ids, kind, capsys):
    lino = ids["Linocut Print"]
    value = {"sha256": lino["sha256"], "sha256-lower": lino["sha256"].lower(), "autov2": lino["sha256"][:10].lower(),
             "file": lino["file"], "file-path": f"C:\\models\\Lora\\{lino['file'].upper()}"}[kind]
    key = "file" if kind.startswith("file") else "hash"
    body = client.get("/v1/lookup", params={key: value}).json()
    assert body["matches"][0]["version_id"] == lino["id"], body
    assert main(["lookup", value, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["matches"] == body["matches"]


def test_lookup_errors(client, ids):
    _problem(client.get("/v1/lookup"), 422)
    _problem(client.get("/v1/lookup", params={"hash": "abc", "file": "x"}), 422)
    _problem(client.get("/v1/lookup", params={"hash": "not-hex!"}), 422)
    _problem(client.get("/v1/lookup", params={"hash": "0123456789abcdef"}), 404)
    _problem(client.get("/v1/lookup", params={"file": "x\x00y"}), 422)
    _problem(client.get("/v1/lookup", params={"hash": ids["Boudoir Soft Light"]["sha256"]}), 404)  # NSFW


def _parameters(ids) -> str:
    checkpoint, lora = ids["Bitforge Pixel Art"], ids["Linocut Print"]
    return (f"a fox, linocut, <lora:{lora['file'].rsplit('.', 1)[0]}:0.7>, <lora:unknownThing:1>\n"
            "Negative prompt: blurry\n"
            f"Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x768, "
            f"Model hash: {checkpoint['sha256'][:10].lower()}, Model: whatever, Version: v1.9")


def test_inspect_resolves_what_an_image_used(client, ids, tmp_path, capsys):
    text_body = client.post("/v1/inspect", data={"parameters": _parameters(ids)}).json()
    assert text_body["checkpoints"][0]["version"]["version_id"] == ids["Bitforge Pixel Art"]["id"]
    assert text_body["checkpoints"][0]["status"] == "served"
    loras = {item["name"]: item for item in text_body["loras"]}
    assert loras["linocutPrint_v2"]["version"]["version_id"] == ids["Linocut Print"]["id"]
    assert loras["linocutPrint_v2"]["weight"] == 0.7 and loras["unknownThing"]["status"] == "unresolved"
    assert text_body["settings"]["seed"] == 42 and text_body["negative_prompt"] == "blurry"
    png = encode_png(Image.new("RGB", (16, 16)), _parameters(ids))
    assert client.post("/v1/inspect", files={"image": ("x.png", png, "image/png")}).json() == text_body
    path = tmp_path / "x.png"
    path.write_bytes(png)
    assert main(["inspect", str(path), "--json"]) == 0
    assert {**json.loads(capsys.readouterr().out.strip().splitlines()[-1]), "schema_version": "1"} == text_body


def test_inspect_errors(client, ids):
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, format="PNG")
    _problem(client.post("/v1/inspect", files={"image": ("x.png", plain.getvalue(), "image/png")}), 422)
    _problem(client.post("/v1/inspect", files={"image": ("x.png", b"garbage", "image/png")}), 422)
    _problem(client.post("/v1/inspect", data={}), 422)
    _problem(client.post("/v1/inspect", data={"parameters": "a\x00b\nSteps: 1, Sampler: x, CFG scale: 1"}), 422)
    _problem(client.post("/v1/inspect", data={"parameters": "a\nSteps: many, Sampler: x, CFG scale: 7"}), 422)


# ---- the studio switched off, the token, limits, CORS ------------------------------------------------------------

def test_generate_and_edit_answer_503_when_the_studio_cannot_run(client):
    body = _problem(client.post("/v1/generate", json={"prompt": PROMPT}), 503)
    assert "ZOO_STUDIO=off" in body["detail"]
    png = encode_png(Image.new("RGB", (16, 16)), "")
    _problem(client.post("/v1/edit", data={"instruction": "make it blue"},
                         files={"image": ("x.png", png, "image/png")}), 503)
    _problem(client.get("/v1/jobs/0123456789abcdef0123456789abcdef"), 404)
    _problem(client.get("/v1/jobs/not-a-job"), 422)


def test_the_token_guards_generate_and_edit(zoo_settings, retriever):
    with _client(zoo_settings, retriever, api_token="sesame") as client:
        body = _problem(client.post("/v1/generate", json={"prompt": PROMPT}), 401)
        assert "Bearer" in body["detail"]
        wrong = client.post("/v1/generate", json={"prompt": PROMPT}, headers={"Authorization": "Bearer nope"})
        assert _problem(wrong, 401) and wrong.headers["www-authenticate"] == "Bearer"
        right = client.post("/v1/generate", json={"prompt": PROMPT}, headers={"Authorization": "Bearer sesame"})
        _problem(right, 503)  # past the token: the studio is off here
        assert client.get("/v1/search", params={"q": PROMPT}).status_code == 200  # search stays open


def test_bodies_larger_than_the_limit_are_413(zoo_settings, retriever):
    with _client(zoo_settings, retriever, max_body_bytes=2000) as client:
        _problem(client.post("/v1/inspect", data={"parameters": "x" * 5000}), 413)

        def chunks():
            for _ in range(10):
                yield b"y" * 1000

        streamed = client.post("/v1/inspect", content=chunks(),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        _problem(streamed, 413)


def test_cors_allows_the_configured_origins_only(zoo_settings, retriever):
    with _client(zoo_settings, retriever, cors_origins=("https://gallery.example",)) as client:
        allowed = client.options("/v1/search", headers={"Origin": "https://gallery.example",
                                                         "Access-Control-Request-Method": "GET"})
        assert allowed.headers["access-control-allow-origin"] == "https://gallery.example"
        other = client.get("/v1/search", params={"q": PROMPT}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in TestClient(create_app(zoo_settings, retriever=retriever)).get(
        "/healthz", headers={"Origin": "https://gallery.example"}).headers


# ---- health, metrics, OpenAPI -------------------------------------------------------------------------------------

def test_health_readiness_and_metrics(client):
    assert client.get("/healthz").json()["status"] == "ok"
    client.get("/v1/search", params={"q": PROMPT})
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["versions"] > 10
    client.get("/v1/versions/1")
    text_ = client.get("/metrics").text
    assert 'zoo_http_requests_total{method="GET",route="/v1/search",status="200"}' in text_
    assert 'zoo_http_requests_total{method="GET",route="/v1/versions/{version_id}",status="404"}' in text_
    assert "zoo_http_request_seconds_bucket" in text_ and "zoo_search_index_generation" in text_
    assert 'zoo_studio_jobs{state="waiting"}' in text_


def test_openapi_declares_problem_json_for_every_error(client):
    schema = client.get("/openapi.json").json()
    assert {"/v1/search", "/v1/versions/{version_id}", "/v1/models/{model_id}", "/v1/lookup", "/v1/inspect",
            "/v1/checkpoints/{version_id}/adapters", "/v1/generate", "/v1/edit", "/v1/jobs/{job_id}",
            "/v1/jobs/{job_id}/image", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    for path in schema["paths"].values():
        for operation in path.values():
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == [PROBLEM], (status, response)
    assert "503" in schema["paths"]["/v1/generate"]["post"]["responses"]
    assert client.get("/docs").status_code == 200


# ---- the schema, fuzzed ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api_schema(zoo_settings, retriever):
    app = create_app(zoo_settings, retriever=retriever, reranker=lambda prompt, hits: list(reversed(hits)))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


# Every check but two: a declared 503 (the studio off here) is no failure, and status_code_conformance still fails
# any 5xx an operation does not declare (500 is declared nowhere); and "exactly one of hash or file", "a query, an
# image or both" cannot be said in OpenAPI's parameters, so a request with neither is schema-valid and rightly 422.
EXCLUDED_CHECKS = [not_a_server_error, positive_data_acceptance]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_answers_as_its_openapi_schema_says(api_schema, mode):
    """Generated requests per operation, valid ones and invalid ones: no undeclared status (5xx included), only
    declared content types, bodies and headers matching their schemas, invalid input refused with a 4xx. A loop
    over the operations rather than schemathesis' pytest plugin, whose lazy fixture loading fails on pytest 9."""
    failures = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            case.call_and_validate(excluded_checks=EXCLUDED_CHECKS)

        try:
            check()
        except Unsatisfiable:  # no parameters or body: nothing invalid to send
            continue
        except (Exception, FailureGroup) as error:  # noqa: BLE001 - all operations' failures are reported together
            failures[operation.label] = "\n".join(map(str, getattr(error, "exceptions", [error])))[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{why}" for label, why in failures.items())
