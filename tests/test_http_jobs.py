"""Generate and edit through the HTTP API's job queue (procrastinate in the module's Postgres) with the tiny studio
of tests/test_studio.py (testkit/studio_world.py): 202 and a job URL, the status and sidecar from any server
process, the PNG with its A1111 parameters, failures recorded with their reason, the token."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from config import Settings  # noqa: E402
from crawlers.dump import snapshot_path  # noqa: E402
from orchestration.run import refresh_zoo  # noqa: E402
from serving.http import create_app  # noqa: E402
from serving.search import open_retriever  # noqa: E402
from serving.studio.png_info import encode_png, parse_parameters, read_png_parameters  # noqa: E402
from serving.studio.studio import Studio  # noqa: E402
from testkit.studio_world import FileServer, serve_tiny_files  # noqa: E402

PROMPT = "pixel art castle on a hill"
TOKEN = "sesame"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SMALL = {"steps": 2, "width": 64, "height": 64, "seed": 7}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(engine, database_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("http-jobs")
    files = FileServer()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", database_url)
        patch.setenv("ZOO_HOME", str(root / "home"))
        patch.setenv("CIVITAI_BASE_URL", files.url)
        patch.setenv("CIVITAI_MAX_RETRIES", "0")
        patch.setenv("ZOO_API_TOKEN", TOKEN)
        patch.delenv("CIVITAI_API_KEY", raising=False)
        patch.delenv("ZOO_PRESET", raising=False)
        settings = Settings.from_env()
        outcome = refresh_zoo(settings, dump_path=str(snapshot_path()), database_url=database_url, workers=1)
        assert outcome.success, outcome.failures()
        tiny = serve_tiny_files(engine, files, root)
        retriever = open_retriever(settings)
        studio = Studio(settings, config_dir=tiny.config_dir, config_variant="tiny", retriever=retriever)
        with TestClient(create_app(settings, retriever=retriever, studio=studio)) as client:
            yield {"client": client, "settings": settings, "retriever": retriever, "studio": studio, "files": files,
                   "tiny": tiny}
    files.close()


def _wait(client: TestClient, url: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {url} still {body['status']} after {timeout} s")


def test_generate_is_queued_and_answered_with_a_png_and_its_sidecar(world):
    client = world["client"]
    queued = client.post("/v1/generate", json={"prompt": PROMPT, **SMALL}, headers=AUTH)
    assert queued.status_code == 202, queued.text
    assert queued.headers["location"] == queued.json()["status_url"]
    assert queued.json()["status"] in ("queued", "running")
    done = _wait(client, queued.headers["location"])
    assert done["status"] == "succeeded", done["error"]
    assert done["sidecar"]["checkpoint"]["name"] == "Bitforge Pixel Art" and done["sidecar"]["adapters"]
    png = client.get(done["image_url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    params = parse_parameters(read_png_parameters(io.BytesIO(png.content)))
    assert params.model_hash == world["tiny"].checkpoint_sha[:10] and params.seed == 7
    with Image.open(io.BytesIO(png.content)) as image:
        assert image.size == (64, 64)


def test_any_server_process_answers_a_job_it_did_not_run(world):
    client = world["client"]
    job = client.post("/v1/generate", json={"prompt": "ink wash mountains", **SMALL}, headers=AUTH).json()
    other = create_app(world["settings"], retriever=world["retriever"], studio=world["studio"], run_worker=False)
    with TestClient(other) as second:
        assert second.get(job["status_url"]).json()["id"] == job["id"]
        done = _wait(second, job["status_url"])
        assert done["status"] == "succeeded" and second.get(done["image_url"]).status_code == 200


def test_edit_keeps_the_input_size(world):
    client = world["client"]
    png = encode_png(Image.new("RGB", (64, 48), "white"), "")
    queued = client.post("/v1/edit", data={"instruction": "in the style of a watercolor painting", "steps": "2",
                                           "seed": "3"},
                         files={"image": ("in.png", png, "image/png")}, headers=AUTH)
    assert queued.status_code == 202, queued.text
    done = _wait(client, queued.headers["location"])
    assert done["status"] == "succeeded", done["error"]
    with Image.open(io.BytesIO(client.get(done["image_url"]).content)) as image:
        assert image.size == (64, 48)


def test_a_failed_job_says_why_and_has_no_image(world):
    client, files = world["client"], world["files"]
    downloader = world["studio"].downloader
    lora = next(v for v, t in world["tiny"].versions.items()  # one no earlier job downloaded: it must be fetched
                if t == "LORA" and downloader.cached_path(hashlib.sha256(files.blobs[v][1]).hexdigest()) is None)
    cached = downloader.cached_path(world["tiny"].checkpoint_sha)
    files.modes[lora] = "404"
    try:
        job = client.post("/v1/generate", json={"prompt": PROMPT, "adapters": [{"version_id": lora, "weight": 0.5}],
                                                **SMALL}, headers=AUTH).json()
        done = _wait(client, job["status_url"])
    finally:
        files.modes.pop(lora)
    assert done["status"] == "failed" and ("404" in done["error"] or "not found" in done["error"].lower()), done
    assert client.get(f"{job['status_url']}/image").status_code == 409
    assert cached is None or cached.exists()


@pytest.mark.parametrize(("body", "needle"), [
    ({"prompt": PROMPT, "checkpoint_version_id": 999999}, "not in the zoo"),
    ({"prompt": PROMPT, "adapters": [{"version_id": 920005, "weight": 0.5}]}, "Checkpoint"),  # not a LoRA
    ({"prompt": PROMPT, "scheduler": "warp"}, "scheduler"),
    ({"prompt": PROMPT, "width": 65}, "multiple"),
    ({"prompt": PROMPT, "steps": 1000}, "steps"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "a\x00b"}, "NUL"),
    ({"prompt": PROMPT, "surprise": 1}, "surprise"),
])
def test_bad_requests_are_refused_before_they_are_queued(world, body, needle):
    answer = world["client"].post("/v1/generate", json=body, headers=AUTH)
    assert answer.status_code == 422 and answer.headers["content-type"].startswith("application/problem+json")
    assert needle.lower() in answer.text.lower(), answer.text


def test_the_token_is_required(world):
    client = world["client"]
    assert client.post("/v1/generate", json={"prompt": PROMPT, **SMALL}).status_code == 401
    png = encode_png(Image.new("RGB", (16, 16)), "")
    assert client.post("/v1/edit", data={"instruction": "x"}, files={"image": ("x.png", png)}).status_code == 401
    assert client.get("/metrics").text.count("zoo_studio_jobs{") == 2


def test_a_settings_change_is_not_needed_to_switch_the_studio_off(world):
    off = dataclasses.replace(world["settings"], studio=False)
    with TestClient(create_app(off, retriever=world["retriever"], studio=world["studio"])) as client:
        assert client.post("/v1/generate", json={"prompt": PROMPT}, headers=AUTH).status_code == 503
