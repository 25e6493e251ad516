"""End to end: `zoo generate` and `zoo edit` through cli.main.main on the shipped snapshot's zoo, with a tiny
SD 1.5-topology checkpoint and tiny kohya LoRAs standing in for the catalogue's files, served by a local HTTP server
in place of Civitai's download endpoint. Nothing is downloaded from anywhere else."""

from __future__ import annotations

import copy
import json
import re
import typing
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytest.importorskip("open_clip")

from PIL import Image
from sqlalchemy import text

from config import Settings
from orchestration.run import refresh_zoo
from cli import main as cli
from crawlers.dump import snapshot_path
from testkit.studio_world import FileServer, serve_tiny_files
from serving.studio.masker import RegionMasker, dilate
from serving.studio.model_files import file_sha256
from serving.studio.png_info import parse_parameters, read_png_parameters, sidecar_path
from serving.studio.studio import Studio, set_default_studio

PROMPT = "pixel art castle on a hill"
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 1},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def patch():
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield monkeypatch


@pytest.fixture(scope="module")
def world(engine, database_url, patch, tmp_path_factory):
    """The snapshot's zoo whose checkpoints point at one tiny checkpoint and whose LoRAs each at a tiny LoRA."""
    root = tmp_path_factory.mktemp("studio")
    files = FileServer()
    patch.setenv("DATABASE_URL", database_url)
    patch.setenv("ZOO_HOME", str(root / "home"))
    patch.setenv("CIVITAI_BASE_URL", files.url)
    patch.setenv("CIVITAI_MAX_RETRIES", "0")
    patch.delenv("CIVITAI_API_KEY", raising=False)
    patch.delenv("ZOO_PRESET", raising=False)
    outcome = refresh_zoo(Settings.from_env(), dump_path=str(snapshot_path()), database_url=database_url, workers=1)
    assert outcome.success, outcome.failures()
    tiny = serve_tiny_files(engine, files, root)
    config, versions = tiny.config_dir, tiny.versions
    masker = RegionMasker(FixedProposer(), _tiny_clip())
    studio = Studio(Settings.from_env(), config_dir=config, config_variant="tiny", masker=masker)
    set_default_studio(studio)
    yield {"root": root, "files": files, "studio": studio, "checkpoint_sha": tiny.checkpoint_sha,
           "versions": versions, "masker": masker}
    set_default_studio(None)
    files.close()


def _tiny_clip():
    from embedding.encoders import OpenClipEncoder

    return OpenClipEncoder("zoo-test-studio-tiny-clip", None, device="cpu", model_config=TINY_CLIP)


class FixedProposer:
    """The masks it was told about (the test image's square), whatever the image."""

    masks: typing.ClassVar[list[np.ndarray]] = []

    def propose(self, image):
        return [m.copy() for m in self.masks]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _generate(capsys, out: Path, *extra: str, prompt: str = PROMPT) -> tuple[int, str, str]:
    return _run(capsys, "generate", prompt, "--out", str(out), "--steps", "2", "--width", "64", "--height", "64",
                "--seed", "7", "--no-rerank", "--json", *extra)


def test_generate_writes_png_with_a1111_parameters_and_sidecar(world, capsys):
    out = world["root"] / "castle.png"
    code, stdout, stderr = _generate(capsys, out)
    assert code == 0, stderr
    answer = json.loads(stdout.strip().splitlines()[-1])
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["checkpoint"]["name"] == "Bitforge Pixel Art"
    assert sidecar["checkpoint"]["model_id"] and sidecar["checkpoint"]["version_id"] == answer["checkpoint"]["version_id"]
    assert sidecar["adapters"], "the composer kept no adapter for the prompt"
    for adapter in sidecar["adapters"]:
        assert adapter["model_id"] and adapter["version_id"] and 0 < adapter["weight"] <= 2
    with Image.open(out) as image:
        assert image.size == (64, 64)
    params = parse_parameters(read_png_parameters(out))
    assert params.prompt.startswith(sidecar["composed_prompt"])
    assert sidecar["composed_prompt"].startswith(PROMPT)
    assert "<lora:" in params.prompt and "<lora:" in sidecar["a1111_prompt"]
    assert params.model_hash == world["checkpoint_sha"][:10]
    tags = dict(params.lora_tags())
    assert set(params.lora_hashes) == set(tags) == {a["lora_name"] for a in sidecar["adapters"]}
    for adapter in sidecar["adapters"]:
        assert params.lora_hashes[adapter["lora_name"]] == adapter["sha256"][:10]
        assert tags[adapter["lora_name"]] == pytest.approx(adapter["weight"])
    assert params.steps == 2 and params.seed == 7 and (params.width, params.height) == (64, 64)


def test_second_generate_downloads_nothing_and_loads_no_checkpoint(world, capsys):
    studio, files = world["studio"], world["files"]
    code, _, stderr = _generate(capsys, world["root"] / "first.png")
    assert code == 0, stderr
    loads, requests = studio.manager.loads, len(files.requests)
    code, _, stderr = _generate(capsys, world["root"] / "second.png", "--seed", "8")
    assert code == 0, stderr
    assert len(files.requests) == requests, files.requests[requests:]
    assert studio.manager.loads == loads == 1


def test_explicit_checkpoint_and_adapters_are_honoured(world, capsys):
    loras = [v for v, t in world["versions"].items() if t == "LORA"][:2]
    checkpoint = next(v for v, t in world["versions"].items() if t == "Checkpoint")
    out = world["root"] / "explicit.png"
    code, _, stderr = _generate(capsys, out, "--checkpoint", str(checkpoint),
                                "--adapters", f"{loras[0]}:0.5,{loras[1]}:0.25")
    assert code == 0, stderr
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["checkpoint"]["version_id"] == checkpoint
    assert [(a["version_id"], a["weight"]) for a in sidecar["adapters"]] == [(loras[0], 0.5), (loras[1], 0.25)]
    params = parse_parameters(read_png_parameters(out))
    assert sorted(w for _, w in params.lora_tags()) == [0.25, 0.5]
    assert len(params.lora_hashes) == 2


@pytest.mark.parametrize("argv", [
    ["generate", PROMPT, "--out", "x.png", "--adapters", "abc"],
    ["generate", PROMPT, "--out", "x.png", "--adapters", "920008:heavy"],
    ["generate", PROMPT, "--out", "x.png", "--adapters", "999999:0.5"],
    ["generate", PROMPT, "--out", "x.png", "--checkpoint", "999999"],
    ["generate", PROMPT, "--out", "x.png", "--checkpoint", "920008"],  # a LoRA, not a checkpoint
    ["generate", PROMPT, "--out", "x.png", "--width", "65"],
    ["edit", "make it blue", "--image", "/nonexistent/in.png", "--out", "x.png"],
])
def test_bad_input_exits_2_with_a_message(world, capsys, argv):
    code, _, stderr = _run(capsys, *argv)
    assert code == 2
    assert stderr.strip()


@pytest.mark.parametrize(("mode", "reason"), [
    ("401", "CIVITAI_API_KEY"), ("403", "early access"), ("404", "not found"), ("mismatch", "hash"),
])
def test_download_failures_exit_1_with_the_reason(world, capsys, mode, reason):
    studio, files = world["studio"], world["files"]
    uncached = [v for v, t in world["versions"].items() if t == "LORA"
                and studio.downloader.cached_path(file_sha256(world["root"] / f"lora-{v}.safetensors")) is None]
    version = uncached[-1]
    files.modes[version] = mode
    try:
        code, _, stderr = _generate(capsys, world["root"] / "failed.png", "--adapters", f"{version}:0.5")
    finally:
        files.modes.pop(version)
    assert code == 1
    assert reason.lower() in " ".join(stderr.split()).lower()
    assert studio.downloader.cached_path(file_sha256(world["root"] / f"lora-{version}.safetensors")) is None


def _square_image(tmp: Path) -> tuple[Path, np.ndarray]:
    """60x44 (not multiples of 8) grey noise with a red square; and the square's mask."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(100, 160, size=(44, 60, 3), dtype=np.uint8)
    square = np.zeros((44, 60), dtype=bool)
    square[14:28, 22:36] = True
    pixels[square] = (220, 20, 20)
    path = tmp / "square.png"
    Image.fromarray(pixels, "RGB").save(path)
    return path, square


def test_edit_inpaints_inside_the_mask_and_keeps_every_other_pixel(world, capsys):
    path, square = _square_image(world["root"])
    FixedProposer.masks = [square]
    out = world["root"] / "edited.png"
    code, _, stderr = _run(capsys, "edit", "change the red square to blue", "--image", str(path), "--out",
                                str(out), "--steps", "2", "--seed", "3", "--json")
    assert code == 0, stderr
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["parsed"]["instruction_type"] == 0 and sidecar["mode"] == "inpaint"
    assert sidecar["mask"]["source"] == "sam+clip"
    assert sidecar["retrieval"]["style"] == "text" and any("image encoder" in n for n in sidecar["notes"])
    original = np.asarray(Image.open(path).convert("RGB"))
    with Image.open(out) as image:
        assert image.size == (60, 44)
        edited = np.asarray(image.convert("RGB"))
    region = dilate(square, world["masker"].dilation_px)
    assert sidecar["mask"]["pixels"] == int(region.sum())
    assert np.array_equal(edited[~region], original[~region])
    assert not np.array_equal(edited[region], original[region])
    params = parse_parameters(read_png_parameters(out))
    assert (params.width, params.height) == (60, 44) and params.model_hash == world["checkpoint_sha"][:10]


def test_edit_global_style_runs_img2img_at_the_input_size(world):
    path, _ = _square_image(world["root"])
    result, sidecar = world["studio"].edit(Image.open(path), "make it look like a watercolor painting", steps=2,
                                           seed=1)
    assert sidecar["parsed"]["instruction_type"] == 3 and sidecar["mode"] == "img2img"
    assert sidecar["retrieval"]["style"] == "text" and sidecar["mask"] is None
    assert result.image.size == (60, 44) and result.mask is None


def test_a_textual_inversion_the_negative_prompt_names_is_fetched_and_loaded(world, engine, database_url, tmp_path):
    """A1111 users write `EasyNegative` in the negative prompt: the studio finds that embedding in the catalogue by
    its file's stem (any case), downloads it verified, and the PNG lists it under TI hashes."""
    from safetensors.torch import save_file

    lines = snapshot_path().read_text(encoding="utf-8").splitlines()
    item = json.loads(lines[7])
    item.update(id=919999, name="Grubbly Negative", type="TextualInversion", tags=["negative embedding"])
    version = item["modelVersions"][0]
    version.update(id=929999, modelId=919999, trainedWords=["GrubblyNeg"])
    version["files"][0].update(id=939999, name="GrubblyNeg.safetensors")
    dump = tmp_path / "with-embedding.jsonl"
    dump.write_text("\n".join([*lines, json.dumps(item)]) + "\n", encoding="utf-8")
    assert refresh_zoo(Settings.from_env(), dump_path=str(dump), database_url=database_url, workers=1).success

    path = tmp_path / "GrubblyNeg.safetensors"
    save_file({"emb_params": torch.randn(2, 32, generator=torch.Generator().manual_seed(5))}, str(path))
    with engine.begin() as conn:
        conn.execute(text("UPDATE model_files SET sha256 = :sha WHERE version_id = 929999 AND is_primary"),
                     {"sha": file_sha256(path).upper()})
    world["files"].blobs[929999] = (path.name, path.read_bytes())

    studio = world["studio"]
    plain, plain_sidecar = studio.generate(PROMPT + ", grubblyneg", negative_prompt="blurry", steps=2, width=64,
                                           height=64, seed=3)  # only the negative prompt calls embeddings
    assert plain_sidecar["embeddings"] == [] and "TI hashes" not in plain.parameters_text
    result, sidecar = studio.generate(PROMPT, negative_prompt="grubblyneg, blurry", steps=2, width=64, height=64,
                                      seed=3)
    assert [ref["version_id"] for ref in sidecar["embeddings"]] == [929999]
    assert parse_parameters(result.parameters_text).ti_hashes == {"GrubblyNeg": file_sha256(path)[:10]}


class CountingCalls:
    """Mixed into the real retriever's class: counts the queries it encodes and the search levels it is asked for
    (level 1: the checkpoints, level 2: the adapters for one)."""

    calls: Counter[str]

    def query_vector(self, query, image=None):
        self.calls["encode"] += 1
        return super().query_vector(query, image)

    def search(self, query, image=None, *, top_k=10, top_checkpoints=3, **kwargs):
        self.calls["level 1"] += int(top_checkpoints > 0)
        self.calls["level 2"] += 1
        return super().search(query, image, top_k=top_k, top_checkpoints=top_checkpoints, **kwargs)

    def checkpoints(self, *args, **kwargs):
        self.calls["level 1"] += 1
        return super().checkpoints(*args, **kwargs)

    def adapters(self, *args, **kwargs):
        self.calls["level 2"] += 1
        return super().adapters(*args, **kwargs)


def counting(retriever):
    """The real retriever (a shallow copy: the same models, database and index) as an instance of a thin subclass of
    its own class that counts what it is asked."""
    counted = copy.copy(retriever)
    counted.__class__ = type(f"Counting{type(retriever).__name__}", (CountingCalls, type(retriever)), {})
    counted.calls = Counter()
    return counted


@pytest.fixture()
def counted(world):
    """A studio sharing the world's warm pipeline, download cache and retriever, whose retriever counts."""
    studio = world["studio"]
    return Studio(studio.settings, retriever=counting(studio.retriever), manager=studio.manager,
                  downloader=studio.downloader, masker=world["masker"])


def _levels(studio) -> dict[str, int]:
    calls = studio.retriever.calls
    return {name: calls[name] for name in ("encode", "level 1", "level 2")}


def test_a_generate_request_searches_each_level_once(counted, world):
    result, sidecar = counted.generate(PROMPT, steps=2, width=64, height=64, seed=7)
    assert _levels(counted) == {"encode": 1, "level 1": 1, "level 2": 1}
    assert sidecar["retrieval"] == {"checkpoint": "retrieved by text", "adapters": "retrieved by text"}
    assert sidecar["checkpoint"]["name"] == "Bitforge Pixel Art" and sidecar["adapters"]
    assert sidecar["checkpoint"]["sha256"] == world["checkpoint_sha"]  # the hit's own file, as search returned it
    same, same_sidecar = world["studio"].generate(PROMPT, steps=2, width=64, height=64, seed=7)
    assert same_sidecar["adapters"] == sidecar["adapters"]
    assert np.array_equal(np.asarray(same.image), np.asarray(result.image))


def test_given_versions_leave_only_the_missing_level_to_search(counted, world):
    checkpoint = next(v for v, t in world["versions"].items() if t == "Checkpoint")
    lora = next(v for v, t in world["versions"].items() if t == "LORA")
    _, sidecar = counted.generate(PROMPT, checkpoint_version_id=checkpoint, steps=2, width=64, height=64, seed=1)
    assert _levels(counted) == {"encode": 1, "level 1": 0, "level 2": 1}
    assert sidecar["checkpoint"]["version_id"] == checkpoint and sidecar["retrieval"]["checkpoint"] == "given"
    counted.retriever.calls.clear()
    _, sidecar = counted.generate(PROMPT, adapters=[(lora, 0.5)], steps=2, width=64, height=64, seed=1)
    assert _levels(counted) == {"encode": 1, "level 1": 1, "level 2": 0}
    assert [(a["version_id"], a["weight"]) for a in sidecar["adapters"]] == [(lora, 0.5)]
    counted.retriever.calls.clear()
    counted.generate(PROMPT, checkpoint_version_id=checkpoint, adapters=[(lora, 0.5)], steps=2, width=64, height=64,
                     seed=1)
    assert _levels(counted) == {"encode": 0, "level 1": 0, "level 2": 0}


def test_an_edit_by_text_searches_each_level_once(counted, world):
    path, _ = _square_image(world["root"])
    _, sidecar = counted.edit(Image.open(path), "make it look like a watercolor painting", steps=2, seed=1)
    assert sidecar["retrieval"] == {"style": "text", "objects": "text"}
    assert _levels(counted) == {"encode": 1, "level 1": 1, "level 2": 1}


def test_a_checkpoint_the_pipelines_cannot_load_is_never_picked_nor_downloaded(world, engine, capsys):
    """An SDXL checkpoint that would win the prompt is passed over by retrieval, and given by id it is refused
    before any download."""
    from embedding.search_index import build_search_index, store_search_index

    studio = world["studio"]
    retriever = studio.retriever
    winner = retriever.search(PROMPT, top_k=1, top_checkpoints=1).checkpoints[0]

    def move(family: str, base_model: str) -> None:
        with engine.begin() as conn:
            conn.execute(text("UPDATE model_versions SET base_model_family = :f, base_model = :b WHERE id = :v"),
                         {"f": family, "b": base_model, "v": winner.version_id})
            conn.execute(text("UPDATE embeddings SET base_model_family = :f WHERE version_id = :v"),
                         {"f": family, "v": winner.version_id})
            store_search_index(conn, build_search_index(conn, retriever.space, retriever.dimension,
                                                        retriever.describer_key))
        retriever.live.refresh()

    move("SDXL", "SDXL 1.0")
    requests = len(world["files"].requests)
    try:
        code, _, stderr = _generate(capsys, world["root"] / "not-sdxl.png")
        assert code == 0, stderr
        picked = json.loads(sidecar_path(world["root"] / "not-sdxl.png").read_text())["checkpoint"]
        assert picked["version_id"] != winner.version_id
        code, _, stderr = _generate(capsys, world["root"] / "sdxl.png", "--checkpoint", str(winner.version_id))
        assert code == 2 and "SD1.x" in " ".join(stderr.split())
        assert not any(str(winner.version_id) in request for request in world["files"].requests[requests:])
    finally:
        move("SD1.x", "SD 1.5")


# --- issue 13: the catalogue's file size caps a download; a download shows its progress ---------------------------

def _forget_downloads(world) -> None:
    """Empty the download cache, so the next request downloads every file it uses."""
    import shutil

    shutil.rmtree(world["studio"].downloader.cache_dir, ignore_errors=True)


def test_a_download_is_capped_by_the_catalogues_size_of_the_file(world, engine):
    from serving.studio.local_files import LocalFiles

    studio = world["studio"]
    checkpoint = next(v for v, t in world["versions"].items() if t == "Checkpoint")
    with engine.connect() as conn:
        size_kb = conn.execute(text("SELECT size_kb FROM model_files WHERE version_id = :v AND is_primary"),
                               {"v": checkpoint}).scalar_one()
    assert studio.catalogue.primary_file_bytes(checkpoint) == int(size_kb * 1024)

    class Recording:
        def __init__(self) -> None:
            self.calls: list[dict] = []

        def cached_path(self, sha256):
            return None

        def fetch(self, version_id, sha256, **options):
            self.calls.append({"version_id": version_id, **options})
            return world["root"] / "tiny.safetensors"

    recording = Recording()
    files = LocalFiles(recording, world["root"] / "home", expected_size=studio.catalogue.primary_file_bytes)
    hit = studio.catalogue.hits([checkpoint])[checkpoint]
    files.path(hit)
    assert recording.calls[0]["expected_bytes"] == int(size_kb * 1024)


def test_the_download_listener_hears_monotone_byte_counts(world):
    _forget_downloads(world)
    heard: dict[str, list[tuple[int, int | None]]] = {}
    world["studio"].generate(PROMPT, steps=2, seed=3, width=64, height=64,
                             on_download=lambda label, done, total: heard.setdefault(label, []).append((done, total)))
    assert heard, "nothing was downloaded"
    for label, counts in heard.items():
        done = [d for d, _ in counts]
        assert done == sorted(done), label
        assert counts[-1][0] == counts[-1][1] > 0, label  # it ends at the file's size
        assert label.endswith(".safetensors")


def test_generate_shows_download_progress_on_stderr_and_json_stays_clean(world, capsys):
    _forget_downloads(world)
    code, stdout, stderr = _generate(capsys, world["root"] / "progress.png")  # --json
    assert code == 0, stderr
    assert isinstance(json.loads(stdout), dict)  # the whole of stdout is one JSON document
    assert "downloading" not in stderr and stderr.strip() == ""

    _forget_downloads(world)
    code, stdout, stderr = _run(capsys, "generate", PROMPT, "--out", str(world["root"] / "bar.png"), "--steps",
                                "2", "--width", "64", "--height", "64", "--seed", "7", "--no-rerank")
    assert code == 0, stderr
    assert stdout == ""
    assert "downloading bitforge" in stderr.lower(), stderr  # the checkpoint's file (cut to fit 80 columns)
    assert re.search(r"\d+(\.\d+)?/\d+(\.\d+)? [kMG]?B", stderr), stderr  # bytes done of the total
