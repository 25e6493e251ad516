"""The Python API behind `zoo generate` and `zoo edit`: retrieval -> (optional rerank) -> compose -> download ->
generate or edit, with everything kept warm across requests.

    studio = Studio(Settings.from_env())
    result, sidecar = studio.generate("pixel art castle on a hill", steps=25, seed=1)
    save_png(result, "castle.png", sidecar)
    result, sidecar = studio.edit(Image.open("castle.png"), "turn the castle into a lighthouse")

Generate asks search once per request: `retriever.search(prompt, top_checkpoints=1)` gives the checkpoint (the top
one) and the adapters retrieved for it, composed by `serving.studio.composer` (weights, trigger words). A given
checkpoint (`checkpoint_version_id`) or given adapters (`adapters=[(version_id, weight), ...]`) are looked up in the
catalogue (`serving.studio.catalogue`), and search runs only the level still needed: adapters for the given
checkpoint, or the checkpoint for the given adapters. Each chosen version's primary file is fetched through the
verified download cache (`serving.studio.local_files`) and handed to the warm pipeline manager. Only LoRA-family
adapters (LORA, LoCon, DoRA) are composed from the retrieved hits; textual inversions are loaded when the negative
prompt calls them by name (A1111's way: `EasyNegative`), hypernetworks and others are skipped with a note in the
sidecar.

Edit: the instruction is parsed (`serving.studio.instructions`, rule-based unless a backend is given). When the edit
keeps the image's style (types 0 and 1, and 2 without a style change) the style checkpoint and style LoRA are
retrieved from the IMAGE; the lite preset has no image encoder, so then they come from the text of the generation
prompt and the sidecar says so. When the style changes (2 with a style change, 3, 4) they come from the TEXT (type 4:
from the reference image when the preset embeds images). Object LoRAs always come from the text: from the same
search when the style does, else from one adapter search by text for the image's checkpoint. Types 0 and 2 inpaint
inside the masker's mask of the subject, type 1 inside the placement the masker picks for the addition, type 3 runs
img2img over the whole image, type 4 img2img from the reference (the input when none is given) with the
instruction's prompt. The output keeps the input's size; outside the mask it is the input, pixel for pixel
(`serving.studio.editor`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config import Settings
from serving.search.results import Filters, Hit
from serving.studio.catalogue import LOADABLE_FAMILIES, LORA_TYPES, Catalogue, StudioError, UnknownVersion
from serving.studio.choice import Choice, Files, Region, best_checkpoint, model_name
from serving.studio.composer import Chosen, Composition, compose, render
from serving.studio.generate import GenerationResult
from serving.studio.generate import generate as run_generate
from serving.studio.model_files import EmbeddingUse, LoraUse
from serving.studio.sidecar import sidecar

if TYPE_CHECKING:
    from serving.studio.local_files import DownloadListener

__all__ = ["Studio", "StudioError", "UnknownVersion", "default_studio", "set_default_studio"]

IMAGE_STYLE_KEYWORD = "image style"  # what a style LoRA retrieved from the image serves (the composer keeps it)
LOADABLE = Filters(families=LOADABLE_FAMILIES)  # retrieval never picks a checkpoint the pipelines cannot load
SUGGESTED_NEGATIVES = 2  # negative embeddings added to an empty negative prompt


class Studio:
    """Retriever, catalogue, pipeline manager and downloader, built once and kept warm across requests. Thread-safe
    per request (the manager's lock serialises the pipeline)."""

    def __init__(self, settings: Settings, *, config_dir: str | Path | None = None, config_variant: str = "sd15",
                 retriever=None, manager=None, downloader=None, masker=None, instruction_parser=None,
                 max_side: int = 768) -> None:
        self.settings = settings
        self._config_dir = Path(config_dir) if config_dir else None
        self._config_variant = config_variant
        self._retriever, self._manager, self._downloader = retriever, manager, downloader
        self._masker, self._parser = masker, instruction_parser
        self._catalogue: Catalogue | None = None
        self._files = None
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
    def catalogue(self) -> Catalogue:
        """Versions by id, described by the retriever's describer (else the fallback's), as search describes them."""
        from db.descriptions import DescriberKey
        from db.engine import get_engine
        from db.migrate import ensure_migrated
        from embedding.refresh import FALLBACK_DESCRIBER

        def build() -> Catalogue:
            retriever = self.retriever
            key = DescriberKey(retriever.describer, retriever.prompt_version, **FALLBACK_DESCRIBER)
            return Catalogue(ensure_migrated(get_engine(self.settings)), key)

        return self._warm("_catalogue", build)

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
    def files(self):
        from serving.studio.local_files import LocalFiles

        return self._warm("_files", lambda: LocalFiles(self.downloader, self.settings.zoo_home,
                                                       expected_size=self.catalogue.primary_file_bytes))

    @property
    def parser(self):
        from serving.studio.instructions import InstructionParser

        return self._warm("_parser", InstructionParser)

    def masker(self, notes: list[str]):
        """The region masker: the injected one; else the settings' (`serving.studio.sam.region_masker`: SAM with the
        configured CLIP, or no proposals without SAM weights, which adds a note)."""
        from serving.studio.sam import region_masker

        with self._guard:
            if self._masker is None:
                s = self.settings
                self._masker, self._masker_note = region_masker(s.sam_checkpoint, s.sam_model_type, s.clip_model,
                                                                s.clip_pretrained)
            if self._masker_note:
                notes.append(self._masker_note)
            return self._masker

    def _rerank_model(self):
        from serving.search import open_reranker

        return self._warm("_reranker", lambda: open_reranker(self.settings))

    # ---- choosing models ------------------------------------------------------------------------------------------

    def _choose(self, prompt: str, checkpoint_version_id: int | None, adapters: Sequence[tuple[int, float]] | None,
                top_k: int, rerank: bool, notes: list[str]) -> Choice:
        """The generation's checkpoint and composed adapters: given ones looked up, the rest searched for (each
        search level at most once)."""
        checkpoint, given = self.catalogue.given(checkpoint_version_id, adapters)
        retrieval = {"checkpoint": "given" if checkpoint is not None else "retrieved by text",
                     "adapters": "given" if given is not None else "retrieved by text"}
        if given is None and rerank:
            retrieval["adapters"] += ", reranked"
        checkpoint, hits, negatives = self._retrieve(prompt, checkpoint, given is None, top_k)
        if given is not None:
            composition = render(prompt, [Chosen(hit, weight, (), hit.kind) for hit, weight in given])
        else:
            composition = self._compose(prompt, hits, notes, rerank=rerank)
        return Choice(checkpoint, composition, retrieval, negatives)

    def _retrieve(self, prompt: str, checkpoint: Hit | None, want_adapters: bool,
                  top_k: int) -> tuple[Hit, list[Hit], list[Hit]]:
        """The checkpoint (the given one, else the best for the prompt), when wanted the adapters retrieved for it,
        and the negative embeddings that suit it: one search of both levels, or of the one level still needed."""
        retriever = self.retriever
        if checkpoint is None and want_adapters:
            result = retriever.search(prompt, top_k=top_k, top_checkpoints=1, filters=LOADABLE)
            return best_checkpoint(result.checkpoints, "for this prompt"), result.adapters, result.negatives
        if checkpoint is None:
            checkpoint = best_checkpoint(retriever.checkpoints(retriever.query_vector(prompt), 1, LOADABLE, words=prompt),
                               "for this prompt")
            hits = []
        else:
            hits = (retriever.adapters(retriever.query_vector(prompt), checkpoint, top_k, words=prompt)
                    if want_adapters else [])
        return checkpoint, hits, retriever.search_engine.negatives(checkpoint)

    @staticmethod
    def _negative_prompt(negative_prompt: str, choice: Choice, notes: list[str]) -> str:
        """The user's negative prompt; when there is none, the suggested negative embeddings, called by their file
        stems as A1111 calls them (they are then fetched and loaded like any embedding the negative prompt names)."""
        if negative_prompt.strip() or not choice.negatives:
            return negative_prompt
        names = [Path(hit.file_name or hit.name).stem for hit in choice.negatives[:SUGGESTED_NEGATIVES]]
        notes.append("negative prompt suggested by search: " + ", ".join(names))
        return ", ".join(names)

    def _compose(self, prompt: str, hits: Sequence[Hit], notes: list[str], *, rerank: bool = False,
                 keywords: dict[int, tuple[str, ...]] | None = None) -> Composition:
        """Compose retrieved adapter hits: only LoRA-family ones (others noted and skipped), reranked if asked."""
        usable = []
        for hit in hits:
            if hit.type in LORA_TYPES:
                usable.append(hit)
            else:
                notes.append(f"skipped {hit.type} {hit.name!r} (version {hit.version_id}): only LORA, LoCon and "
                             "DoRA adapters are applied")
        if rerank and usable:
            usable = self._rerank(prompt, usable, notes)
        return compose(prompt, usable, keywords=keywords)

    def _rerank(self, prompt: str, hits: list[Hit], notes: list[str]) -> list[Hit]:
        """The hits with their reranker scores; as they came (with a note) when the reranker cannot be loaded."""
        from serving.search import rerank_hits

        try:
            reranked = rerank_hits(prompt, hits, self._rerank_model())
        except Exception as error:  # noqa: BLE001 - reranking is optional: retrieval order stands
            notes.append(f"rerank skipped: {error}")
            return hits
        notes.append(f"adapters reranked by SmolLM2 ({len(hits)} candidates)")
        return reranked

    # ---- files ------------------------------------------------------------------------------------------------------

    def _prepare(self, choice: Choice, negative_prompt: str, notes: list[str],
                 on_download: DownloadListener | None = None) -> Files:
        """The chosen versions' verified local files, and the textual inversions the negative prompt names;
        `on_download` hears of every file downloaded (name, bytes done, total)."""
        checkpoint = self.files.path(choice.checkpoint, on_download)
        loras = [LoraUse(item.lora_name, self.files.path(item.adapter, on_download),
                         (item.adapter.sha256 or "").lower(), item.weight) for item in choice.composition.adapters]
        embeddings, embedding_hits = self._embeddings(choice.checkpoint, negative_prompt, notes, on_download)
        return Files(checkpoint, loras, embeddings, embedding_hits)

    def _current_files(self, choice: Choice) -> Choice:
        """The choice with each version's primary file as the catalogue has it now: hits come from the search
        index's generation, and a download must verify against the catalogue's current hash."""
        chosen = [choice.checkpoint, *(item.adapter for item in choice.composition.adapters)]
        current = self.catalogue.hits([hit.version_id for hit in chosen])
        for hit in chosen:
            if hit.version_id not in current:
                raise UnknownVersion(f"version {hit.version_id} ({hit.name}) left the zoo after the search index "
                                     "was built; try again after the next refresh")

        def now(hit: Hit) -> Hit:
            found = current[hit.version_id]
            return replace(hit, sha256=found.sha256, file_name=found.file_name, download_url=found.download_url)

        adapters = [replace(item, adapter=now(item.adapter)) for item in choice.composition.adapters]
        return replace(choice, checkpoint=now(choice.checkpoint),
                       composition=replace(choice.composition, adapters=adapters))

    def _embeddings(self, checkpoint: Hit, negative_prompt: str, notes: list[str],
                    on_download: DownloadListener | None = None) -> tuple[list[EmbeddingUse], list[Hit]]:
        """The textual inversions the negative prompt names (where Civitai prompts call them: the whole catalogue
        is a large namespace, and a positive prompt's ordinary words would call stray embeddings), fetched and
        checked; one that cannot be fetched or loaded is noted and its name stays a word."""
        from crawlers.downloads import DownloadError

        used, hits = [], []
        for hit in self.catalogue.named_embeddings(checkpoint.base_model_family, negative_prompt):
            try:
                path = self.files.path(hit, on_download)
                embedding = EmbeddingUse(Path(hit.file_name or path.name).stem, path, (hit.sha256 or "").lower())
                problem = self.manager.embedding_problem(embedding)
            except DownloadError as error:
                problem = str(error)
            if problem:
                notes.append(f"textual inversion {hit.name!r} (version {hit.version_id}) not loaded: {problem}")
                continue
            used.append(embedding)
            hits.append(hit)
        return used, hits

    # ---- generate ---------------------------------------------------------------------------------------------------

    def generate(self, prompt: str, *, checkpoint_version_id: int | None = None,
                 adapters: Sequence[tuple[int, float]] | None = None, negative_prompt: str = "", steps: int = 25,
                 seed: int | None = -1, cfg: float = 7.0, width: int = 512, height: int = 512,
                 scheduler: str = "dpm++_2m_karras", rerank: bool = False, top_k: int = 10,
                 on_download: DownloadListener | None = None) -> tuple[GenerationResult, dict[str, Any]]:
        """One image for `prompt`; returns the result and the sidecar (model and version ids, weights, prompts).
        `on_download(file name, bytes done, total)` hears of each file downloaded for it."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise StudioError("the prompt is empty")
        notes: list[str] = []
        choice = self._current_files(self._choose(prompt, checkpoint_version_id, adapters, top_k, rerank, notes))
        negative_prompt = self._negative_prompt(negative_prompt, choice, notes)
        files = self._prepare(choice, negative_prompt, notes, on_download)
        result = run_generate(self.manager, checkpoint_path=files.checkpoint,
                              checkpoint_sha256=choice.checkpoint.sha256.lower(), loras=files.loras,
                              embeddings=files.embeddings, prompt=choice.composition.prompt,
                              negative_prompt=negative_prompt, steps=steps, cfg=cfg, seed=seed, width=width,
                              height=height, scheduler=scheduler, model_name=model_name(choice.checkpoint))
        return result, sidecar({"kind": "generate", "prompt": prompt}, choice.checkpoint, choice.composition,
                               files.embedding_hits, choice.retrieval, negative_prompt, notes)

    # ---- edit -------------------------------------------------------------------------------------------------------

    def edit(self, image, instruction: str, *, reference=None, negative_prompt: str = "", steps: int = 25,
             seed: int | None = -1, cfg: float = 7.0, scheduler: str = "dpm++_2m_karras",
             strength: float | None = None, top_k: int = 10,
             on_download: DownloadListener | None = None) -> tuple[GenerationResult, dict[str, Any]]:
        """Edit `image` as the instruction says; the result keeps its size (outside the mask: its exact pixels).
        `on_download(file name, bytes done, total)` hears of each file downloaded for it."""
        from serving.studio.editor import edit_image
        from serving.studio.masker import to_rgb

        if not isinstance(instruction, str) or not instruction.strip():
            raise StudioError("the instruction is empty")
        rgb = to_rgb(image)
        parsed = self.parser.parse(instruction)
        notes: list[str] = []
        choice = self._current_files(self._edit_choice(parsed, parsed.generation_prompt or instruction, rgb,
                                                       reference, top_k, notes))
        negative_prompt = self._negative_prompt(negative_prompt, choice, notes)
        region = self._edit_region(parsed, rgb, reference, notes)
        files = self._prepare(choice, negative_prompt, notes, on_download)
        outcome = edit_image(self.manager, image=region.init, mode=region.mode, mask=region.mask,
                             checkpoint_path=files.checkpoint, checkpoint_sha256=choice.checkpoint.sha256.lower(),
                             loras=files.loras, embeddings=files.embeddings, prompt=choice.composition.prompt,
                             negative_prompt=negative_prompt, steps=steps, cfg=cfg, seed=seed, scheduler=scheduler,
                             strength=strength, max_side=self.max_side, model_name=model_name(choice.checkpoint))
        head = {"kind": "edit", "instruction": instruction, "parsed": {**parsed.as_dict(), "source": parsed.source},
                "mode": region.mode, "mask": region.info}
        outcome.result.mask = outcome.mask  # type: ignore[attr-defined]  # bool HxW or None (img2img)
        return outcome.result, sidecar(head, choice.checkpoint, choice.composition, files.embedding_hits,
                                       choice.retrieval, negative_prompt, notes)

    def _edit_choice(self, parsed, prompt: str, rgb, reference, top_k: int, notes: list[str]) -> Choice:
        """The edit's checkpoint and adapters: the style search by image (or text), object adapters by text."""
        from serving.studio.masker import to_rgb

        kind, retriever = parsed.instruction_type, self.retriever
        keeps_style = kind in (0, 1) or (kind == 2 and not parsed.style_transformation)
        source = rgb if keeps_style else (to_rgb(reference) if kind == 4 and reference is not None else None)
        if source is not None and retriever.image_encoder is None:
            notes.append("this preset has no image encoder: the style checkpoint and LoRA were retrieved from the "
                         "text of the generation prompt instead of the image")
            source = None
        if source is None:  # one search by text: the checkpoint, and the adapters serve style and objects alike
            style = retriever.search(prompt, top_k=top_k, top_checkpoints=1, filters=LOADABLE)
            checkpoint = best_checkpoint(style.checkpoints, "to edit with")
            retrieval = {"style": "text", "objects": "text"}
            return Choice(checkpoint, self._compose(prompt, style.adapters, notes), retrieval, style.negatives)
        style = retriever.search(None, source, top_k=top_k, top_checkpoints=1, filters=LOADABLE)
        checkpoint = best_checkpoint(style.checkpoints, "to edit with")
        style_hit = next((hit for hit in style.adapters if hit.kind == "style"), None)  # the image's style LoRA
        objects = retriever.adapters(retriever.query_vector(prompt), checkpoint, top_k, words=prompt)
        hits = [style_hit] if style_hit is not None else []
        hits += [hit for hit in objects if style_hit is None or hit.version_id != style_hit.version_id]
        keywords = {style_hit.version_id: (IMAGE_STYLE_KEYWORD,)} if style_hit is not None else {}
        retrieval = {"style": "image" if keeps_style else "reference image", "objects": "text"}
        return Choice(checkpoint, self._compose(prompt, hits, notes, keywords=keywords), retrieval, style.negatives)

    def _edit_region(self, parsed, rgb, reference, notes: list[str]) -> Region:
        """Types 0 and 2 inpaint the subject's mask, 1 the placement for the addition; 3 runs img2img over the
        image, 4 from the reference (the input when none is given) at the input's size."""
        from serving.studio.masker import to_rgb

        kind = parsed.instruction_type
        if kind in (0, 1, 2):
            masker = self.masker(notes)
            region = (masker.mask_for_addition(rgb, parsed.subject) if kind == 1
                      else masker.mask_for_subject(rgb, parsed.subject))
            info = {"source": region.source, "bbox": list(region.bbox), "score": region.score,
                    "pixels": int(region.mask.sum())}
            return Region("inpaint", rgb, region.mask, info)
        if kind == 3:
            return Region("img2img", rgb)
        if reference is None:
            notes.append("no reference image given: the style transfer starts from the input image")
            return Region("img2img", rgb)
        init = to_rgb(reference)
        return Region("img2img", init.resize(rgb.size) if init.size != rgb.size else init)


# ---- one studio per process (the CLI; tests install their own) -------------------------------------------------

_DEFAULT: Studio | None = None
_DEFAULT_LOCK = threading.Lock()


def default_studio(settings: Settings) -> Studio:
    """The process's studio (built on first use from the caller's settings), so repeated requests in one process
    reuse warm models."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Studio(settings)
        return _DEFAULT


def set_default_studio(studio: Studio | None) -> None:
    global _DEFAULT
    with _DEFAULT_LOCK:
        _DEFAULT = studio
