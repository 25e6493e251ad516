"""The Python API behind `zoo generate` and `zoo edit`: retrieval -> (optional rerank) -> compose -> download ->
generate or edit, with everything kept warm across requests.

    studio = Studio(Settings.from_env())
    result, sidecar = studio.generate("pixel art castle on a hill", steps=25, seed=1)
    save_png(result, "castle.png", sidecar)
    result, sidecar = studio.edit(Image.open("castle.png"), "turn the castle into a lighthouse")

Generate: the checkpoint is the retriever's top one (or `checkpoint_version_id`), the adapters those retrieved for it
and composed by `serving.studio.composer` (weights, trigger words; or `adapters=[(version_id, weight), ...]` as given). Each
chosen version's primary file (`served_model_versions.primary_file_sha256` / `primary_file_name`) is fetched through
the verified download cache (a cache hit costs no network) and handed to the warm pipeline manager. Only LoRA-family
adapters (LORA, LoCon, DoRA) are composed from the retrieved hits; textual inversions are loaded when the negative
prompt calls them by name (A1111's way: `EasyNegative`), hypernetworks and others are skipped with a note in the
sidecar.

Edit: the instruction is parsed (`serving.studio.instructions`, rule-based unless a backend is given). When the edit keeps
the image's style (types 0 and 1, and 2 without a style change) the style checkpoint and style LoRA are retrieved
from the IMAGE; the lite preset has no image encoder, so then they come from the text of the generation prompt and
the sidecar says so. When the style changes (2 with a style change, 3, 4) they come from the TEXT (type 4: from the
reference image when the preset embeds images). Object LoRAs always come from the text. Types 0 and 2 inpaint inside
the masker's mask of the subject, type 1 inside the placement the masker picks for the addition, type 3 runs img2img
over the whole image, type 4 img2img from the reference (the input when none is given) with the instruction's prompt.
The output keeps the input's size; outside the mask it is the input, pixel for pixel (`serving.studio.editor`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from config import Settings
from embedding.describe_card import trigger_words_or_trained
from serving.studio.composer import (
    DEFAULT_WEIGHT,
    KINDS,
    Adapter,
    Chosen,
    Composition,
    compose,
    lora_name,
    render,
)
from serving.studio.generate import GenerationResult
from serving.studio.generate import generate as run_generate
from serving.studio.pipelines import EmbeddingUse, LoraUse

log = logging.getLogger(__name__)

LORA_TYPES = ("LORA", "LoCon", "DoRA")
IMAGE_STYLE_KEYWORD = "image style"  # what a style LoRA retrieved from the image serves (the composer keeps it)


class StudioError(RuntimeError):
    """A request the studio cannot serve as asked (unknown version id, wrong model type, empty zoo): bad input."""


class UnknownVersion(StudioError):
    """A version id that the zoo does not serve (missing, NSFW, deleted, or of the wrong type)."""


@dataclass
class ModelRef:
    """One chosen version, as the download and the pipeline need it."""

    version_id: int
    model_id: int
    name: str
    version_name: str
    type: str
    base_model: str | None
    base_model_family: str | None
    sha256: str | None
    file_name: str | None
    trigger_words: list[str] = field(default_factory=list)
    kind: str = "checkpoint"
    weight: float = 1.0
    lora_name: str = ""
    keywords: list[str] = field(default_factory=list)
    path: Path | None = None
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = {"model_id": self.model_id, "version_id": self.version_id, "name": self.name,
                "version_name": self.version_name, "type": self.type, "base_model": self.base_model,
                "sha256": (self.sha256 or "").lower() or None, "file_name": self.file_name}
        if self.type != "Checkpoint":
            data.update(kind=self.kind, weight=self.weight, lora_name=self.lora_name, keywords=self.keywords,
                        trigger_words=self.trigger_words)
        return data


_LOOKUP = """
    SELECT s.version_id, s.model_id, s.model_name, s.version_name, s.model_type, s.base_model, s.base_model_family,
           s.trained_words, s.primary_file_sha256, s.primary_file_name,
           d.kind, d.trigger_words AS described_triggers, d.recommended_weight, d.text AS description
    FROM served_model_versions s
    LEFT JOIN LATERAL (SELECT kind, trigger_words, recommended_weight, text FROM descriptions dd
                       WHERE dd.version_id = s.version_id ORDER BY dd.describer = 'card-text', dd.describer LIMIT 1) d
           ON true
    WHERE s.version_id = ANY(:ids)"""


# Textual inversions a negative prompt calls by name: A1111 names an embedding by its file's stem and matches it in
# any case. The most downloaded version wins when several files share a stem; only the checkpoint's family fits its
# encoder, and only .safetensors files are ever read.
_NAMED_EMBEDDINGS = """
    SELECT DISTINCT ON (stem) version_id FROM (
        SELECT version_id, version_download_count,
               lower(regexp_replace(primary_file_name, '[.][^.]*$', '')) AS stem
        FROM served_model_versions
        WHERE model_type = 'TextualInversion' AND base_model_family = :family
          AND primary_file_name ILIKE '%.safetensors') named
    WHERE stem = ANY(:words)
    ORDER BY stem, version_download_count DESC, version_id"""
_WORD = re.compile(r"[\w.\-]+")


def _composer_kind(kind: str | None) -> str:
    return kind if kind in KINDS else "concept"


class Studio:
    """Retriever, pipeline manager and downloader, built once and kept warm across requests. Thread-safe per request
    (the manager's lock serialises the pipeline)."""

    def __init__(self, settings: Settings | None = None, *, config_dir: str | Path | None = None,
                 config_variant: str = "sd15", retriever=None, manager=None, downloader=None, masker=None,
                 instruction_parser=None, engine: Engine | None = None, max_side: int = 768) -> None:
        self.settings = settings or Settings.from_env()
        self._config_dir = Path(config_dir) if config_dir else None
        self._config_variant = config_variant
        self._retriever, self._manager, self._downloader = retriever, manager, downloader
        self._masker, self._parser, self._engine = masker, instruction_parser, engine
        self._reranker: tuple[Any, Any] | None = None
        self._masker_note: str | None = None
        self.max_side = max_side
        self._guard = threading.RLock()

    # ---- warm parts, built on first use -------------------------------------------------------------------------

    def _warm(self, attribute: str, build: Callable[[], Any]) -> Any:
        """The part held in `attribute` (given to the constructor, else built once, under the guard: parts are
        heavy, models and pipelines, and requests may come from several threads)."""
        with self._guard:
            if getattr(self, attribute) is None:
                setattr(self, attribute, build())
            return getattr(self, attribute)

    @property
    def retriever(self):
        from serving.search import open_retriever

        return self._warm("_retriever", lambda: open_retriever(self.settings))

    @property
    def engine(self) -> Engine:
        from db.engine import get_engine
        from db.migrate import ensure_migrated

        return self._warm("_engine", lambda: self._retriever.engine if self._retriever is not None
                          else ensure_migrated(get_engine(self.settings)))

    @property
    def manager(self):
        from serving.studio.pipelines import PipelineManager
        from serving.studio.sd_components import default_config_dir, write_sd15_config

        def build():
            if self._config_dir is not None:
                return PipelineManager(write_sd15_config(self._config_dir, self._config_variant))
            return PipelineManager(default_config_dir(self.settings.zoo_home, self._config_variant))

        return self._warm("_manager", build)

    @property
    def downloader(self):
        from crawlers.downloads import from_settings

        return self._warm("_downloader", lambda: from_settings(self.settings))

    @property
    def parser(self):
        from serving.studio.instructions import InstructionParser

        return self._warm("_parser", InstructionParser)

    def masker(self, notes: list[str]):
        """The region masker: the injected one; else SAM (weights file in ZOO_SAM_CHECKPOINT, ZOO_SAM_MODEL_TYPE) with
        the configured CLIP; else one with no proposals (subjects mask the whole image, additions get a placed box)."""
        with self._guard:
            if self._masker is None:
                from serving.studio.masker import RegionMasker, SamMaskProposer

                sam = self.settings.sam_checkpoint
                if sam:
                    from embedding.encoders import OpenClipEncoder

                    clip = OpenClipEncoder(self.settings.clip_model, self.settings.clip_pretrained)
                    proposer = SamMaskProposer(sam, model_type=self.settings.sam_model_type)
                    self._masker = RegionMasker(proposer, clip)
                else:
                    self._masker = RegionMasker(_NoProposals(), _NoClip())
                    self._masker_note = ("no SAM weights (set ZOO_SAM_CHECKPOINT): subjects mask the whole image, "
                                         "additions a placed box")
            if self._masker_note:
                notes.append(self._masker_note)
            return self._masker

    def _rerank_model(self):
        from serving.search import open_reranker

        return self._warm("_reranker", lambda: open_reranker(self.settings))

    # ---- catalogue lookups ----------------------------------------------------------------------------------------

    def lookup(self, version_ids: Sequence[int]) -> dict[int, ModelRef]:
        """The served versions among `version_ids`, with their primary file's sha256 and name."""
        ids = sorted({int(v) for v in version_ids})
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(text(_LOOKUP), {"ids": ids}).mappings().all()
        found = {}
        for row in rows:
            triggers = trigger_words_or_trained(row["described_triggers"], row["trained_words"])
            kind = "checkpoint" if row["model_type"] == "Checkpoint" else (row["kind"] or "other")
            found[int(row["version_id"])] = ModelRef(
                version_id=int(row["version_id"]), model_id=int(row["model_id"]), name=row["model_name"],
                version_name=row["version_name"], type=row["model_type"], base_model=row["base_model"],
                base_model_family=row["base_model_family"], sha256=row["primary_file_sha256"],
                file_name=row["primary_file_name"], trigger_words=triggers, kind=kind,
                weight=float(row["recommended_weight"] or DEFAULT_WEIGHT), description=row["description"] or "")
        return found

    def _checkpoint_ref(self, version_id: int) -> ModelRef:
        ref = self.lookup([version_id]).get(int(version_id))
        if ref is None:
            raise UnknownVersion(f"version {version_id} is not in the zoo (unknown, NSFW, deleted or unlisted)")
        if ref.type != "Checkpoint":
            raise UnknownVersion(f"version {version_id} ({ref.name}) is a {ref.type}, not a checkpoint")
        return ref

    def _hit_refs(self, hits) -> dict[int, ModelRef]:
        return self.lookup([h.version_id for h in hits])

    # ---- choosing models ------------------------------------------------------------------------------------------

    def _checkpoint_hit(self, ref: ModelRef):
        from serving.search.results import Hit

        return Hit(model_id=ref.model_id, version_id=ref.version_id, name=ref.name, version_name=ref.version_name,
                   type=ref.type, kind="checkpoint", base_model=ref.base_model,
                   base_model_family=ref.base_model_family or "", score=0.0, similarity=0.0, downloads=0,
                   co_usage_images=0, trigger_words=[], recommended_weight=None, download_url=None, why="given")

    def _rerank(self, prompt: str, hits: list, notes: list[str]) -> dict[int, float]:
        """version id -> reranker score; empty (with a note) when the reranker cannot be loaded."""
        from serving.search import rerank_hits

        try:
            reranked = rerank_hits(prompt, hits, self._rerank_model())
        except Exception as error:  # noqa: BLE001 - reranking is optional: retrieval order stands
            notes.append(f"rerank skipped: {error}")
            return {}
        notes.append(f"adapters reranked by SmolLM2 ({len(hits)} candidates)")
        return {hit.version_id: hit.rerank_score for hit in reranked}

    def _compose(self, prompt: str, hits: list, notes: list[str], *, rerank: bool = False,
                 forced: dict[int, tuple[str, ...]] | None = None) -> tuple[Composition, list[ModelRef]]:
        """Compose retrieved adapter hits: only LoRA-family ones with a known file; others noted and skipped."""
        refs = self._hit_refs(hits)
        usable = []
        for hit in hits:
            ref = refs.get(hit.version_id)
            if ref is None:
                continue
            if ref.type not in LORA_TYPES:
                notes.append(f"skipped {ref.type} {ref.name!r} (version {ref.version_id}): only LORA, LoCon and "
                             "DoRA adapters are applied")
                continue
            usable.append(hit)
        scores = self._rerank(prompt, usable, notes) if rerank and usable else {}
        adapters = [Adapter(id=str(h.version_id), name=h.name, kind=_composer_kind(h.kind),
                            trigger_words=tuple(h.trigger_words),
                            weight=float(h.recommended_weight or DEFAULT_WEIGHT),
                            score=scores.get(h.version_id, h.score), description=refs[h.version_id].description,
                            keywords=(forced or {}).get(h.version_id, ()),
                            file_name=refs[h.version_id].file_name or "")
                    for h in usable]
        composition = compose(prompt, adapters)
        chosen = []
        for item in composition.adapters:
            ref = refs[int(item.adapter.id)]
            ref.weight, ref.lora_name, ref.keywords = item.weight, lora_name(item.adapter), list(item.keywords)
            ref.kind = item.adapter.kind
            chosen.append(ref)
        return composition, chosen

    def _explicit(self, prompt: str, adapters: Sequence[tuple[int, float]]) -> tuple[Composition, list[ModelRef]]:
        refs = self.lookup([v for v, _ in adapters])
        chosen: list[ModelRef] = []
        given: list[Chosen] = []
        for version_id, weight in adapters:
            ref = refs.get(int(version_id))
            if ref is None:
                raise UnknownVersion(f"adapter version {version_id} is not in the zoo (unknown, NSFW, deleted or "
                                     "unlisted)")
            if ref.type not in LORA_TYPES:
                raise UnknownVersion(f"adapter version {version_id} ({ref.name}) is a {ref.type}; only LORA, LoCon "
                                     "and DoRA adapters can be applied")
            ref = ModelRef(**ref.__dict__)
            adapter = Adapter(id=str(ref.version_id), name=ref.name, kind="concept",
                              trigger_words=tuple(ref.trigger_words), file_name=ref.file_name or "")
            ref.weight, ref.lora_name = float(weight), lora_name(adapter)
            chosen.append(ref)
            given.append(Chosen(adapter, ref.weight, ()))
        composition = render(prompt, given)
        return Composition(adapters=[], prompt=composition.prompt, a1111=composition.a1111), chosen

    # ---- files ------------------------------------------------------------------------------------------------------

    def fetch(self, ref: ModelRef) -> Path:
        """The verified local file of a chosen version (the download cache; network only on a miss)."""
        from crawlers.downloads import DownloadError

        if not ref.sha256:
            raise DownloadError(f"model version {ref.version_id} ({ref.name}): the catalogue has no sha256 for its "
                                "primary file, so a download could not be verified", version_id=ref.version_id)
        cached = self.downloader.fetch(ref.version_id, ref.sha256, file_name_hint=ref.file_name)
        ref.path = self._named(cached, ref)
        return ref.path

    def _named(self, cached: Path, ref: ModelRef) -> Path:
        """The cache holds files by bare sha256; the pipeline reads the format from the suffix. A symlink (else a hard
        link, else a copy) `$ZOO_HOME/models/by-sha256/<sha256><suffix>` gives the verified file its suffix."""
        import shutil

        suffix = Path(ref.file_name or "").suffix.lower() or ".safetensors"
        if suffix not in (".safetensors", ".ckpt", ".pt", ".bin", ".pth"):
            suffix = ".safetensors"
        link = Path(self.settings.zoo_home) / "models" / "by-sha256" / f"{cached.name}{suffix}"
        if link.exists() and link.resolve() == cached.resolve():
            return link
        link.parent.mkdir(parents=True, exist_ok=True)
        staging = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}")
        staging.unlink(missing_ok=True)
        try:
            staging.symlink_to(cached.resolve())
        except OSError:
            try:
                os.link(cached, staging)
            except OSError:
                shutil.copyfile(cached, staging)
        os.replace(staging, link)
        return link

    def named_embeddings(self, checkpoint: ModelRef, prompt: str) -> list[ModelRef]:
        """The served textual inversions of the checkpoint's family that a prompt calls by name (e.g.
        `EasyNegative` in a negative prompt pasted from Civitai)."""
        words = sorted({word.lower().strip(".-") for word in _WORD.findall(prompt)} - {""})
        if not words:
            return []
        with self.engine.connect() as conn:
            ids = conn.execute(text(_NAMED_EMBEDDINGS), {"family": checkpoint.base_model_family,
                                                          "words": words}).scalars().all()
        return list(self.lookup(ids).values())

    def _embeddings(self, checkpoint: ModelRef, negative_prompt: str,
                    notes: list[str]) -> tuple[list[EmbeddingUse], list[ModelRef]]:
        """The textual inversions the negative prompt names (where Civitai prompts call them: the whole catalogue
        is a large namespace, and a positive prompt's ordinary words would call stray embeddings), fetched and
        checked; one that cannot be fetched or loaded is noted and its name stays a word."""
        from crawlers.downloads import DownloadError

        used, refs = [], []
        for ref in self.named_embeddings(checkpoint, negative_prompt):
            try:
                path = self.fetch(ref)
                embedding = EmbeddingUse(Path(ref.file_name or path.name).stem, path, (ref.sha256 or "").lower())
                problem = self.manager.embedding_problem(embedding)
            except DownloadError as error:
                problem = str(error)
            if problem:
                notes.append(f"textual inversion {ref.name!r} (version {ref.version_id}) not loaded: {problem}")
                continue
            used.append(embedding)
            refs.append(ref)
        return used, refs

    def _loras(self, chosen: Sequence[ModelRef]) -> list[LoraUse]:
        return [LoraUse(ref.lora_name, self.fetch(ref), (ref.sha256 or "").lower(), ref.weight) for ref in chosen]

    @staticmethod
    def _model_name(ref: ModelRef) -> str:
        return Path(ref.file_name).stem if ref.file_name else ref.name

    # ---- generate ---------------------------------------------------------------------------------------------------

    def generate(self, prompt: str, *, checkpoint_version_id: int | None = None,
                 adapters: Sequence[tuple[int, float]] | None = None, negative_prompt: str = "", steps: int = 25,
                 seed: int | None = -1, cfg: float = 7.0, width: int = 512, height: int = 512,
                 scheduler: str = "dpm++_2m_karras", rerank: bool = False, top_k: int = 10,
                 ) -> tuple[GenerationResult, dict[str, Any]]:
        """One image for `prompt`; returns the result and the sidecar (model and version ids, weights, prompts)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise StudioError("the prompt is empty")
        notes: list[str] = []
        retrieval: dict[str, Any] = {}
        if checkpoint_version_id is not None:
            checkpoint = self._checkpoint_ref(checkpoint_version_id)
            retrieval["checkpoint"] = "given"
        else:
            result = self.retriever.search(prompt, top_k=top_k, top_checkpoints=1)
            if not result.checkpoints:
                raise StudioError("the zoo has no checkpoint for this prompt: run `zoo refresh` (or `zoo demo`) first")
            checkpoint = self._checkpoint_ref(result.checkpoints[0].version_id)
            retrieval["checkpoint"] = "retrieved by text"
        if adapters is not None:
            composition, chosen = self._explicit(prompt, adapters)
            retrieval["adapters"] = "given"
        else:
            retriever = self.retriever
            hits = retriever.adapters(retriever.query_vector(prompt), self._checkpoint_hit(checkpoint), top_k,
                                      words=prompt)
            composition, chosen = self._compose(prompt, hits, notes, rerank=rerank)
            retrieval["adapters"] = "retrieved by text" + (", reranked" if rerank else "")
        ckpt_path = self.fetch(checkpoint)
        loras = self._loras(chosen)
        embeddings, embedding_refs = self._embeddings(checkpoint, negative_prompt, notes)
        result = run_generate(self.manager, checkpoint_path=ckpt_path, checkpoint_sha256=checkpoint.sha256.lower(),
                              loras=loras, embeddings=embeddings, prompt=composition.prompt,
                              negative_prompt=negative_prompt, steps=steps, cfg=cfg, seed=seed, width=width,
                              height=height, scheduler=scheduler, model_name=self._model_name(checkpoint))
        sidecar = {"kind": "generate", "prompt": prompt, "composed_prompt": composition.prompt,
                   "a1111_prompt": composition.a1111, "negative_prompt": negative_prompt,
                   "checkpoint": checkpoint.as_dict(), "adapters": [r.as_dict() for r in chosen],
                   "embeddings": [r.as_dict() for r in embedding_refs], "retrieval": retrieval, "notes": notes}
        return result, sidecar

    # ---- edit -------------------------------------------------------------------------------------------------------

    def edit(self, image, instruction: str, *, reference=None, negative_prompt: str = "", steps: int = 25,
             seed: int | None = -1, cfg: float = 7.0, scheduler: str = "dpm++_2m_karras",
             strength: float | None = None, top_k: int = 10) -> tuple[GenerationResult, dict[str, Any]]:
        """Edit `image` as the instruction says; the result keeps its size (outside the mask: its exact pixels)."""
        from serving.studio.editor import edit_image
        from serving.studio.masker import to_rgb

        if not isinstance(instruction, str) or not instruction.strip():
            raise StudioError("the instruction is empty")
        rgb = to_rgb(image)
        parsed = self.parser.parse(instruction)
        kind, style_change = parsed.instruction_type, parsed.style_transformation
        prompt = parsed.generation_prompt or instruction
        notes: list[str] = []
        retriever = self.retriever
        keeps_style = kind in (0, 1) or (kind == 2 and not style_change)
        style_source = rgb if keeps_style else (to_rgb(reference) if kind == 4 and reference is not None else None)
        if style_source is not None and retriever.image_encoder is None:
            notes.append("this preset has no image encoder: the style checkpoint and LoRA were retrieved from the "
                         "text of the generation prompt instead of the image")
            style_source = None
        if style_source is not None:
            style = retriever.search(None, style_source, top_k=top_k, top_checkpoints=1)
            style_by = "image" if keeps_style else "reference image"
        else:
            style = retriever.search(prompt, top_k=top_k, top_checkpoints=1)
            style_by = "text"
        if not style.checkpoints:
            raise StudioError("the zoo has no checkpoint to edit with: run `zoo refresh` (or `zoo demo`) first")
        checkpoint = self._checkpoint_ref(style.checkpoints[0].version_id)
        hits, forced = [], {}
        if style_by != "text":  # the image's style LoRA (best 'style' adapter of the image search)
            style_hit = next((h for h in style.adapters if h.kind == "style"), None)
            if style_hit is not None:
                hits.append(style_hit)
                forced[style_hit.version_id] = (IMAGE_STYLE_KEYWORD,)
        text_hits = retriever.adapters(retriever.query_vector(prompt), self._checkpoint_hit(checkpoint), top_k,
                                       words=prompt)
        hits += [h for h in text_hits if h.version_id not in forced]
        composition, chosen = self._compose(prompt, hits, notes, forced=forced)

        mask_info: dict[str, Any] | None = None
        mask = None
        if kind in (0, 1, 2):
            masker = self.masker(notes)
            region = (masker.mask_for_addition(rgb, parsed.subject) if kind == 1
                      else masker.mask_for_subject(rgb, parsed.subject))
            mask = region.mask
            mask_info = {"source": region.source, "bbox": list(region.bbox), "score": region.score,
                         "pixels": int(mask.sum())}
            mode, init = "inpaint", rgb
        elif kind == 3:
            mode, init = "img2img", rgb
        else:
            mode = "img2img"
            init = to_rgb(reference) if reference is not None else rgb
            if reference is None:
                notes.append("no reference image given: the style transfer starts from the input image")
            if init.size != rgb.size:
                init = init.resize(rgb.size)
        ckpt_path = self.fetch(checkpoint)
        loras = self._loras(chosen)
        embeddings, embedding_refs = self._embeddings(checkpoint, negative_prompt, notes)
        outcome = edit_image(self.manager, image=init, mode=mode, mask=mask, checkpoint_path=ckpt_path,
                             checkpoint_sha256=checkpoint.sha256.lower(), loras=loras, embeddings=embeddings,
                             prompt=composition.prompt,
                             negative_prompt=negative_prompt, steps=steps, cfg=cfg, seed=seed, scheduler=scheduler,
                             strength=strength, max_side=self.max_side, model_name=self._model_name(checkpoint))
        sidecar = {"kind": "edit", "instruction": instruction, "parsed": {**parsed.as_dict(), "source": parsed.source},
                   "mode": mode, "mask": mask_info, "composed_prompt": composition.prompt,
                   "a1111_prompt": composition.a1111, "negative_prompt": negative_prompt,
                   "checkpoint": checkpoint.as_dict(), "adapters": [r.as_dict() for r in chosen],
                   "embeddings": [r.as_dict() for r in embedding_refs],
                   "retrieval": {"style": style_by, "objects": "text"}, "notes": notes}
        outcome.result.mask = outcome.mask  # type: ignore[attr-defined]  # bool HxW or None (img2img)
        return outcome.result, sidecar


class _NoProposals:
    def propose(self, image):
        return []


class _NoClip:
    """Stands in for CLIP when no SAM is configured: the masker then only scores the whole image (always 0)."""

    def encode_text(self, texts):
        import numpy as np

        return np.ones((len(texts), 1), dtype=np.float32)

    def encode_images(self, images):
        import numpy as np

        return np.zeros((len(images), 1), dtype=np.float32)


# ---- one studio per process (the CLI; tests install their own) ---------------------------------------------------------

_DEFAULT: Studio | None = None
_DEFAULT_LOCK = threading.Lock()


def default_studio(settings: Settings | None = None) -> Studio:
    """The process's studio (built on first use), so repeated requests in one process reuse warm models."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Studio(settings or Settings.from_env())
        return _DEFAULT


def set_default_studio(studio: Studio | None) -> None:
    global _DEFAULT
    with _DEFAULT_LOCK:
        _DEFAULT = studio
