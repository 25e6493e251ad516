"""What a studio request runs with, once chosen: the checkpoint and composed adapters (Choice), their local files
(Files), and where an edit paints (Region)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.search.results import Hit
from serving.studio.catalogue import StudioError
from serving.studio.composer import Composition
from serving.studio.model_files import EmbeddingUse, LoraUse

NO_CHECKPOINT = "the zoo has no checkpoint {}: run `zoo refresh` (or `zoo demo`) first"


@dataclass(frozen=True)
class Choice:
    """What a request runs with: the checkpoint, the composed adapters and prompt, and how each was chosen."""

    checkpoint: Hit
    composition: Composition
    retrieval: dict[str, str]
    negatives: list[Hit] = field(default_factory=list)  # embeddings search suggests for the negative prompt


@dataclass(frozen=True)
class Files:
    """The chosen versions' local files as the pipeline takes them, and the textual inversions' hits."""

    checkpoint: Path
    loras: list[LoraUse]
    embeddings: list[EmbeddingUse]
    embedding_hits: list[Hit]


@dataclass(frozen=True)
class Region:
    """Where and how an edit paints: the pipeline mode, its init image, the mask (inpaint) and its sidecar record."""

    mode: str
    init: Any  # PIL.Image.Image
    mask: Any = None  # bool HxW
    info: dict[str, Any] | None = None


def best_checkpoint(checkpoints: list[Hit], purpose: str) -> Hit:
    if not checkpoints:
        raise StudioError(NO_CHECKPOINT.format(purpose))
    return checkpoints[0]


def model_name(hit: Hit) -> str:
    """The checkpoint's name in the PNG parameters: its file's stem, as A1111 writes it."""
    return Path(hit.file_name).stem if hit.file_name else hit.name
