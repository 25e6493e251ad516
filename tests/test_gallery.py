"""The gallery page (serving/http/gallery_routes.py) on the shipped snapshot's zoo, its example images served by a
local stand-in for Civitai's image host: the HTML the server renders (cards grouped by role and kind, the copy
button's tag, the version page, every bad input answered with the page and its reason, escaping), then the page in a
real Chromium (Debian's `chromium` driven by Playwright through `executable_path`): a query typed, the DOM checked,
a tag copied, a version page opened, screenshots at desktop and phone width saved under tests/artifacts/."""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sqlalchemy import text

from config import Settings
from crawlers.dump import snapshot_path
from orchestration.run import refresh_zoo
from serving.http import create_app
from serving.search import open_retriever
from testkit.studio_world import FileServer

PROMPT = "pixel art castle on a hill"
CHECKPOINT = "Bitforge Pixel Art"
ARTIFACTS = Path(__file__).parent / "artifacts"
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}


def _png(seed: int) -> bytes:
    """A small example image: a blend of two colours picked by the seed, top to bottom."""
    first = Image.new("RGB", (96, 72), ((seed * 53) % 256, (seed * 97) % 256, (seed * 29) % 256))
    second = Image.new("RGB", (96, 72), ((seed * 31) % 256, (seed * 71) % 256, (seed * 113) % 256))
    mask = Image.linear_gradient("L").resize((96, 72))
    out = io.BytesIO()
    Image.composite(first, second, mask).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def world(engine, database_url, tmp_path_factory):
    """The snapshot's zoo with every example image's URL on a local image server, and the app over it."""
    files = FileServer()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", database_url)
        patch.setenv("ZOO_STUDIO", "off")
        zoo_settings = Settings.from_env()
        outcome = refresh_zoo(zoo_settings, dump_path=str(snapshot_path()), database_url=database_url, workers=1)
        assert outcome.success, outcome.failures()
        with engine.begin() as conn:
            image_ids = conn.execute(text("SELECT id FROM images")).scalars().all()
            conn.execute(text("UPDATE images SET url = :base || '/images/' || id || '.png'"), {"base": files.url})
        files.images.update({f"{image_id}.png": _png(image_id) for image_id in image_ids})
        retriever = open_retriever(zoo_settings)
        with TestClient(create_app(zoo_settings, retriever=retriever)) as client:
            yield {"client": client, "settings": zoo_settings, "retriever": retriever, "files": files}
    files.close()


@pytest.fixture(scope="module")
def ids(engine, world) -> dict:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT v.id, m.name FROM model_versions v JOIN models m ON m.id = v.model_id"))
        return {name: version_id for version_id, name in rows}


def _html(response, status: int = 200) -> str:
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "Traceback" not in response.text
    return response.text


# ---- the HTML the server renders -----------------------------------------------------------------------------------

def test_the_empty_page_has_the_search_box_and_the_filters(world):
    page = _html(world["client"].get("/"))
    assert 'id="q"' in page and 'name="base_model"' in page and ">SD 1.5<" in page
    assert 'class="card"' not in page


def test_a_search_shows_the_checkpoint_and_adapters_as_cards(world):
    client = world["client"]
    api = client.get("/v1/search", params={"q": PROMPT, "top_k": 10, "checkpoints": 5}).json()
    page = _html(client.get("/", params={"q": PROMPT}))
    assert CHECKPOINT in page and api["adapters_for"]["name"] == CHECKPOINT
    for hit in api["adapters"]:
        assert f'data-version-id="{hit["version_id"]}"' in page and f'data-kind="{hit["kind"]}"' in page
        if hit["lora_tag"]:
            assert f'data-copy="{hit["lora_tag"].replace("<", "&lt;").replace(">", "&gt;")}"' in page
    assert f"{world['files'].url}/images/" in page  # thumbnails from the image host
    assert "Why this?" in page and "For your prompt" in page


def test_another_checkpoint_can_be_chosen_for_the_adapters(world):
    client = world["client"]
    api = client.get("/v1/search", params={"q": PROMPT, "checkpoints": 5}).json()
    other = api["checkpoints"][1]
    page = _html(client.get("/", params={"q": PROMPT, "checkpoint": other["version_id"]}))
    chosen = page.split('id="checkpoint-heading"', 1)[1].split("</article>", 1)[0]
    assert f'data-version-id="{other["version_id"]}"' in chosen
    mine = client.get(f"/v1/checkpoints/{other['version_id']}/adapters", params={"q": PROMPT}).json()
    assert all(f'data-version-id="{hit["version_id"]}"' in page for hit in mine["adapters"])


@pytest.mark.parametrize(("params", "status", "needle"), [
    ({"q": "castle\x00"}, 422, "NUL"),
    ({"q": "x" * 4001}, 422, "4000"),
    ({"q": PROMPT, "top_k": "many"}, 422, "top_k"),
    ({"q": PROMPT, "top_k": "0"}, 422, "top_k"),
    ({"q": PROMPT, "min_downloads": "-5"}, 422, "min_downloads"),
    ({"q": PROMPT, "base_model": "SDXL 9000"}, 422, "SD 1.5"),
    ({"q": PROMPT, "type": "Wildcards"}, 422, "LORA"),
    ({"q": PROMPT, "max_content_level": "X"}, 422, "PG-13"),
    ({"q": PROMPT, "checkpoint": "abc"}, 422, "version id"),
    ({"q": PROMPT, "checkpoint": "99999999999999999999999"}, 422, "version id"),
    ({"q": PROMPT, "checkpoint": "123456789"}, 404, "not served"),
])
def test_bad_input_is_the_page_with_the_reason(world, params, status, needle):
    page = _html(world["client"].get("/", params=params), status)
    assert 'role="alert"' in page and needle in page


FIELDS = ("q", "base_model", "type", "commercial_use", "max_content_level", "min_downloads", "top_k", "checkpoint")


@given(params=st.lists(st.tuples(st.sampled_from(FIELDS), st.text(max_size=30)), max_size=6),
       version=st.text(min_size=1, max_size=12))
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_input_makes_the_pages_fail(world, params, version):
    client = world["client"]
    assert client.get("/", params=params).status_code in (200, 404, 422)
    assert client.get(f"/versions/{quote(version, safe='')}").status_code in (200, 404)


def test_what_the_page_echoes_is_escaped(world):
    page = _html(world["client"].get("/", params={"q": '<script>alert("x")</script>'}))
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page


def test_the_version_page(world, ids):
    client = world["client"]
    card = client.get(f"/v1/versions/{ids['Linocut Print']}").json()
    page = _html(client.get(f"/versions/{ids['Linocut Print']}"))
    assert card["name"] in page and card["lora_tag"].replace("<", "&lt;").replace(">", "&gt;") in page
    assert card["files"][0]["hashes"]["sha256"] in page and card["civitai_url"].replace("&", "&amp;") in page
    assert all(image["url"] in page for image in card["images"])
    for missing in ("1", "abc", "0", "²", str(2**64), str(ids["Afterhours Photoreal"])):  # the last one is NSFW
        assert "not served" in _html(client.get(f"/versions/{missing}"), 404)


def test_static_files_are_a_fixed_list(world):
    client = world["client"]
    assert client.get("/static/gallery.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/gallery.css").status_code == 200
    for name in ("app.py", "..%2Fapp.py", "gallery.html"):
        assert client.get(f"/static/{name}").status_code == 404


# ---- in a real browser ---------------------------------------------------------------------------------------------

def _chromium() -> str:
    path = os.environ.get("ZOO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no Chromium: install Debian's package (apt-get install chromium; .ci/run does) or set "
                    "ZOO_CHROMIUM to a Chromium binary")
    return path


@pytest.fixture(scope="module")
def live_url(world):
    """The app under a real uvicorn on a free port, in a thread, for the browser."""
    import uvicorn

    app = create_app(world["settings"], retriever=world["retriever"])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (pip install -e .[dev])")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


def _until(page, expression: str, timeout: float = 15.0) -> None:
    """Poll a JavaScript expression (page.wait_for_function evaluates a string, which the page's CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        time.sleep(0.1)


def _no_sideways_scroll(page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_the_gallery_in_chromium(browser, live_url, world):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("response", lambda response: errors.append(f"{response.status} {response.url}")
            if response.status >= 400 else None)
    page.goto(f"{live_url}/")
    page.evaluate("document.activeElement.blur()")  # the box has autofocus: leave it, then come back by key
    page.keyboard.press("/")  # the shortcut to the search box
    assert page.evaluate("[document.activeElement.id, document.activeElement.value]") == ["q", ""]
    page.keyboard.type(PROMPT)
    page.keyboard.press("Enter")
    page.wait_for_selector("article.card")
    assert "base_model=" not in page.url and "q=pixel+art" in page.url  # unset filters left out

    chosen = page.locator(".chosen .cards.one article.card")
    assert chosen.locator(".name").inner_text() == CHECKPOINT
    api = world["client"].get("/v1/search", params={"q": PROMPT, "checkpoints": 5}).json()
    cards = page.locator("section.role article.card")
    names = cards.locator(".name").all_inner_texts()
    assert sorted(names) == sorted(hit["name"] for hit in api["adapters"] + api["negatives"])
    headings = page.locator("section.role h3.kind-heading")
    assert headings.count() >= 2
    for heading in headings.all():  # each kind's cards under its heading
        kind = heading.evaluate("element => element.firstChild.textContent.trim()")
        shown = heading.evaluate("element => Array.from(element.nextElementSibling.querySelectorAll('.kind'))"
                                 ".map(k => k.textContent)")
        assert shown and set(shown) == {kind}, (kind, shown)

    copy = page.locator("section.role button.copy").first
    tag = copy.locator("code").inner_text()
    assert tag.startswith("<lora:") and tag.endswith(">") and copy.get_attribute("data-copy") == tag
    copy.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("button.copy.copied")
    assert "Copied" in copy.inner_text()
    assert page.evaluate("navigator.clipboard.readText()") == tag

    why = page.locator("section.role details.why").first
    assert not why.evaluate("element => element.open")
    why.locator("summary").click()
    assert why.evaluate("element => element.open") and why.locator("p").first.inner_text().strip()

    thumbs = page.locator("article.card img.thumb")
    assert thumbs.count() > 0
    thumbs.first.scroll_into_view_if_needed()
    _until(page, "Array.from(document.images).some(image => image.complete && image.naturalWidth > 0)")
    _no_sideways_scroll(page)
    page.screenshot(path=str(ARTIFACTS / "gallery-desktop.png"), full_page=True)

    first = cards.first.locator(".name a")
    name = first.inner_text()
    first.click()
    page.wait_for_selector("article.version")
    assert page.locator("h1.name").inner_text() == name
    assert page.locator("article.version button.copy code").inner_text().startswith("<lora:")
    assert page.locator(".hashes dd").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "version-desktop.png"), full_page=False)

    page.set_viewport_size(PHONE)
    page.go_back()
    page.wait_for_selector("article.card")
    _no_sideways_scroll(page)
    page.screenshot(path=str(ARTIFACTS / "gallery-phone.png"), full_page=False)
    assert not errors, errors
    context.close()
    print(f"screenshots in {ARTIFACTS}")

