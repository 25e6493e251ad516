"""Self-test of tests/fake_civitai.py, driven by a plain `requests` client.

Why: the crawler tests trust this fake to behave like civitai.com (pagination, filters,
faults); if the fake is wrong, those tests prove nothing.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

try:
    from tests.fake_civitai import Fault, FakeCivitai
except ImportError:  # tests/ not importable as a package: pytest put tests/ itself on sys.path
    from fake_civitai import Fault, FakeCivitai


def _item(model_id: int, name: str, type_: str, base_model: str, *, nsfw: bool = False, sha: str = "") -> dict:
    """A small Civitai-shaped model with one version and one file."""
    return {
        "id": model_id,
        "name": name,
        "type": type_,
        "nsfw": nsfw,
        "poi": False,
        "tags": ["test"],
        "modelVersions": [
            {
                "id": model_id * 10,
                "name": "v1",
                "baseModel": base_model,
                "files": [
                    {
                        "id": model_id * 100,
                        "name": f"{model_id}.safetensors",
                        "primary": True,
                        "hashes": {
                            "AutoV2": f"{model_id:010X}",
                            "SHA256": sha or f"{model_id:064X}",
                            "CRC32": f"C{model_id:07X}",
                        },
                    }
                ],
            }
        ],
    }


def make_items() -> list[dict]:
    return [
        _item(1, "Alpha", "Checkpoint", "SD 1.5"),
        _item(2, "ベータ 🚀", "LORA", "SDXL 1.0"),
        _item(3, "Gamma", "LORA", "SD 1.5", nsfw=True),
        _item(4, "Delta", "TextualInversion", "Pony"),
        _item(5, "Epsilon", "Checkpoint", "SDXL 1.0", sha="ABCDEF0123456789" * 4),
        _item(6, "Zeta", "LORA", "Illustrious"),
        _item(7, "Eta", "Checkpoint", "Pony", nsfw=True),
    ]


ALL_IDS = [1, 2, 3, 4, 5, 6, 7]
SFW_IDS = [1, 2, 4, 5, 6]


@pytest.fixture
def fake() -> Iterator[FakeCivitai]:
    with FakeCivitai(make_items(), page_size=2) as server:
        yield server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def crawl(session: requests.Session, url: str, params: dict | list | None = None) -> list[dict]:
    """Follow metadata.nextPage until it is absent; return every page body."""
    pages = []
    resp = session.get(url, params=params, timeout=5)
    while True:
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages.append(body)
        next_page = body["metadata"].get("nextPage")
        if not next_page:
            assert "nextCursor" not in body["metadata"]
            return pages
        resp = session.get(next_page, timeout=5)


def ids_of(pages: list[dict]) -> list[int]:
    return [item["id"] for page in pages for item in page["items"]]


# ------------------------------------------------------------------------- pagination
def test_pagination_follows_next_page_over_all_items(fake: FakeCivitai, session: requests.Session) -> None:
    pages = crawl(session, fake.base_url + "/api/v1/models", {"limit": 100, "nsfw": "true", "sort": "Newest"})
    assert ids_of(pages) == ALL_IDS
    assert [len(p["items"]) for p in pages] == [2, 2, 2, 1]
    # nextPage carries all original params plus the cursor, on the fake's own host.
    first_next = urlsplit(pages[0]["metadata"]["nextPage"])
    assert f"{first_next.scheme}://{first_next.netloc}" == fake.base_url
    q = parse_qs(first_next.query)
    assert q["limit"] == ["100"] and q["nsfw"] == ["true"] and q["sort"] == ["Newest"]
    assert q["cursor"] == [pages[0]["metadata"]["nextCursor"]]
    assert len(fake.page_requests()) == 4


def test_pagination_by_next_cursor_and_small_limit(fake: FakeCivitai, session: requests.Session) -> None:
    url = fake.base_url + "/api/v1/models"
    seen: list[int] = []
    params: dict[str, str | int] = {"limit": 1}
    while True:
        body = session.get(url, params=params, timeout=5).json()
        assert len(body["items"]) <= 1
        seen += [i["id"] for i in body["items"]]
        cursor = body["metadata"].get("nextCursor")
        if cursor is None:
            break
        params = {"limit": 1, "cursor": cursor}
    assert seen == SFW_IDS


def test_bad_params_give_400(fake: FakeCivitai, session: requests.Session) -> None:
    url = fake.base_url + "/api/v1/models"
    for params in ({"limit": 101}, {"limit": -1}, {"limit": "abc"}, {"cursor": "garbage!!"}, {"cursor": "Zm9v"}):
        resp = session.get(url, params=params, timeout=5)
        assert resp.status_code == 400, params
        assert "error" in resp.json()


def test_page_param_and_page_cap(fake: FakeCivitai, session: requests.Session) -> None:
    url = fake.base_url + "/api/v1/models"
    resp = session.get(url, params={"page": 11, "limit": 100}, timeout=5)
    assert resp.status_code == 429
    assert resp.json() == {"error": "You've requested too many pages, please use cursors instead"}
    body = session.get(url, params={"page": 2, "limit": 100}, timeout=5).json()
    assert [i["id"] for i in body["items"]] == [4, 5]
    assert body["metadata"]["currentPage"] == 2
    assert parse_qs(urlsplit(body["metadata"]["nextPage"]).query)["page"] == ["3"]


def test_limit_zero_ends_immediately(fake: FakeCivitai, session: requests.Session) -> None:
    body = session.get(fake.base_url + "/api/v1/models", params={"limit": 0}, timeout=5).json()
    assert body == {"items": [], "metadata": {}}


# ------------------------------------------------------------------------- filters
def test_nsfw_default_hides_nsfw_items(fake: FakeCivitai, session: requests.Session) -> None:
    url = fake.base_url + "/api/v1/models"
    assert ids_of(crawl(session, url)) == SFW_IDS
    assert ids_of(crawl(session, url, {"nsfw": "false"})) == SFW_IDS
    assert ids_of(crawl(session, url, {"nsfw": "true"})) == ALL_IDS


def test_types_repeated_or_comma_separated(fake: FakeCivitai, session: requests.Session) -> None:
    url = fake.base_url + "/api/v1/models"
    comma = crawl(session, url, {"types": "LORA,TextualInversion", "nsfw": "true"})
    repeated = crawl(session, url, [("types", "LORA"), ("types", "TextualInversion"), ("nsfw", "true")])
    assert ids_of(comma) == ids_of(repeated) == [2, 3, 4, 6]
    # Repeated params survive into nextPage.
    assert parse_qs(urlsplit(repeated[0]["metadata"]["nextPage"]).query)["types"] == ["LORA", "TextualInversion"]


def test_base_models_filter(fake: FakeCivitai, session: requests.Session) -> None:
    url = fake.base_url + "/api/v1/models"
    assert ids_of(crawl(session, url, {"baseModels": "SDXL 1.0,Pony", "nsfw": "true"})) == [2, 4, 5, 7]
    assert ids_of(crawl(session, url, [("baseModels", "SD 1.5"), ("types", "Checkpoint")])) == [1]


# ------------------------------------------------------------------------- encoding, mutation
def test_json_utf8_and_non_ascii_names(fake: FakeCivitai, session: requests.Session) -> None:
    resp = session.get(fake.base_url + "/api/v1/models/2", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    assert json.loads(resp.content.decode("utf-8"))["name"] == "ベータ 🚀"


def test_items_are_read_at_request_time(fake: FakeCivitai, session: requests.Session) -> None:
    url = fake.base_url + "/api/v1/models/1"
    assert session.get(url, timeout=5).json()["name"] == "Alpha"
    fake.items[0]["name"] = "Alpha renamed"
    assert session.get(url, timeout=5).json()["name"] == "Alpha renamed"


# ------------------------------------------------------------------------- single lookups
def test_deleted_ids(fake: FakeCivitai, session: requests.Session) -> None:
    fake.deleted_ids.add(4)
    resp = session.get(fake.base_url + "/api/v1/models/4", timeout=5)
    assert resp.status_code == 404
    assert resp.json() == {"error": "No model with id 4"}
    assert 4 not in ids_of(crawl(session, fake.base_url + "/api/v1/models"))
    assert session.get(fake.base_url + "/api/v1/model-versions/40", timeout=5).status_code == 404
    assert session.get(fake.base_url + "/api/v1/models/999", timeout=5).json() == {"error": "No model with id 999"}


def test_model_version_by_id(fake: FakeCivitai, session: requests.Session) -> None:
    body = session.get(fake.base_url + "/api/v1/model-versions/20", timeout=5).json()
    assert body["id"] == 20 and body["modelId"] == 2 and body["baseModel"] == "SDXL 1.0"
    assert body["model"] == {"name": "ベータ 🚀", "type": "LORA", "nsfw": False, "poi": False}
    assert body["files"][0]["hashes"]["CRC32"] == "C0000002"
    resp = session.get(fake.base_url + "/api/v1/model-versions/12345", timeout=5)
    assert resp.status_code == 404 and "error" in resp.json()


def test_by_hash_is_case_insensitive(fake: FakeCivitai, session: requests.Session) -> None:
    base = fake.base_url + "/api/v1/model-versions/by-hash/"
    sha = "ABCDEF0123456789" * 4
    for h in (sha, sha.lower(), "0000000005", "c0000005"):
        resp = session.get(base + h, timeout=5)
        assert resp.status_code == 200, h
        assert resp.json()["id"] == 50 and resp.json()["modelId"] == 5
    assert session.get(base + "deadbeef", timeout=5).status_code == 404


def test_unknown_path_is_json_404(fake: FakeCivitai, session: requests.Session) -> None:
    for method, path in (("GET", "/api/v1/nope"), ("GET", "/"), ("POST", "/api/v1/models")):
        resp = session.request(method, fake.base_url + path, timeout=5)
        assert resp.status_code == 404
        assert "error" in resp.json()


# ------------------------------------------------------------------------- duplicates
def test_repeat_item_across_pages(session: requests.Session) -> None:
    with FakeCivitai(make_items(), page_size=2, repeat_item_across_pages=True) as fake:
        pages = crawl(session, fake.base_url + "/api/v1/models", {"nsfw": "true"})
    page_ids = [[i["id"] for i in p["items"]] for p in pages]
    assert page_ids == [[1, 2], [2, 3, 4], [4, 5, 6], [6, 7]]
    ids = ids_of(pages)
    assert len(ids) > len(set(ids))
    assert list(dict.fromkeys(ids)) == ALL_IDS


# ------------------------------------------------------------------------- faults
@pytest.mark.parametrize(
    ("kind", "status", "retry_after", "body"),
    [
        ("429", 429, None, None),
        ("429-retry-after", 429, "1", None),
        ("500", 500, None, None),
        ("503", 503, "1", {"error": "Server busy, please retry shortly."}),
    ],
)
def test_status_faults(
    fake: FakeCivitai, session: requests.Session, kind: str, status: int, retry_after: str | None, body: dict | None
) -> None:
    fake.faults.append(Fault(kind))
    url = fake.base_url + "/api/v1/models"
    resp = session.get(url, timeout=5)
    assert resp.status_code == status
    assert resp.headers.get("Retry-After") == retry_after
    assert "error" in resp.json()
    if body is not None:
        assert resp.json() == body
    # The queue is consumed: the retry succeeds, on any endpoint.
    assert session.get(url, timeout=5).status_code == 200
    assert [r.fault for r in fake.requests] == [kind, None]
    assert [r.status for r in fake.requests] == [status, 200]


def test_fault_on_nth_request(fake: FakeCivitai, session: requests.Session) -> None:
    fake.fault_on_request[2] = Fault("503")
    statuses = [session.get(fake.base_url + "/api/v1/models/1", timeout=5).status_code for _ in range(3)]
    assert statuses == [200, 503, 200]
    assert [r.number for r in fake.requests] == [1, 2, 3]


def test_truncate_raises_on_requests(fake: FakeCivitai, session: requests.Session) -> None:
    fake.faults.append(Fault("truncate"))
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        session.get(fake.base_url + "/api/v1/models", timeout=5)
    assert fake.requests[0].status == 200 and fake.requests[0].fault == "truncate"
    assert fake.page_requests() == []  # a truncated page is not an answered page
    assert session.get(fake.base_url + "/api/v1/models", timeout=5).status_code == 200
    assert len(fake.page_requests()) == 1


def test_truncate_sends_half_of_announced_body(fake: FakeCivitai) -> None:
    fake.faults.append(Fault("truncate"))
    host, port = urlsplit(fake.base_url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /api/v1/models?nsfw=true HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    assert 0 < len(body) == length // 2 < length


def test_reset_raises_connection_error(fake: FakeCivitai, session: requests.Session) -> None:
    url = fake.base_url + "/api/v1/models"
    assert session.get(url, timeout=5).status_code == 200  # leaves a pooled keep-alive connection
    fake.faults.append(Fault("reset"))
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(url, timeout=5)
    assert fake.requests[-1].fault == "reset" and fake.requests[-1].status is None
    assert session.get(url, timeout=5).status_code == 200


def test_slow_fault_and_page_delay(session: requests.Session) -> None:
    with FakeCivitai(make_items(), page_size=2) as fake:
        fake.faults.append(Fault("slow", seconds=0.3))
        t0 = time.monotonic()
        resp = session.get(fake.base_url + "/api/v1/models/1", timeout=5)
        assert time.monotonic() - t0 >= 0.3
        assert resp.status_code == 200 and resp.json()["id"] == 1
        assert fake.requests[0].fault == "slow"
    with FakeCivitai(make_items(), page_size=2, page_delay=0.1) as fake:
        t0 = time.monotonic()
        pages = crawl(session, fake.base_url + "/api/v1/models")
        assert len(pages) == 3 and time.monotonic() - t0 >= 0.3


def test_unknown_fault_kind_is_rejected() -> None:
    with pytest.raises(ValueError):
        Fault("404")


# ------------------------------------------------------------------------- request log
def test_request_log(fake: FakeCivitai, session: requests.Session) -> None:
    session.headers["Authorization"] = "Bearer sekrit-key"
    crawl(session, fake.base_url + "/api/v1/models", [("types", "LORA"), ("types", "Checkpoint"), ("limit", "50")])
    session.get(fake.base_url + "/api/v1/models/999", timeout=5)
    session.get(fake.base_url + "/api/v1/models", params={"limit": 500}, timeout=5)

    first = fake.requests[0]
    assert first.method == "GET" and first.path == "/api/v1/models"
    assert first.query == {"types": ["LORA", "Checkpoint"], "limit": ["50"]}
    assert first.authorization == "Bearer sekrit-key"
    assert all(r.headers.get("Authorization") == "Bearer sekrit-key" for r in fake.requests)
    assert "cursor" in fake.requests[1].query
    assert [r.status for r in fake.requests] == [200, 200, 404, 400]
    assert [r.number for r in fake.page_requests()] == [1, 2]


def test_stop_refuses_connections() -> None:
    fake = FakeCivitai(make_items()).start()
    url = fake.base_url + "/api/v1/models"
    assert requests.get(url, timeout=5).status_code == 200
    fake.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url, timeout=2)
