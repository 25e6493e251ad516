"""Warm Stable Diffusion 1.5 pipelines: single-file checkpoints loaded offline, LoRAs as named adapters, an LRU.

    manager = PipelineManager(write_sd15_config(zoo_home / "sd15-config"))
    with manager.lock:
        entry, load_s = manager.get(checkpoint_path, sha256)           # 0.0 s when the pipeline is warm
        lora_s = manager.set_loras(entry, [LoraUse(name, path, sha, 0.8)])  # loads new adapters, swaps weights
        entry.pipe.scheduler = manager.scheduler(entry, "dpm++_2m_karras")
        image = entry.pipe(prompt, generator=seeded_generator(seed), ...).images[0]

- A checkpoint is loaded from ONE `.safetensors` file in the original (A1111/Civitai) key layout with
  `StableDiffusionPipeline.from_single_file(path, config=<local diffusers-layout folder>, local_files_only=True)`:
  every config comes from `config_dir` (see `serving.studio.sd_components`), nothing from the hub. The tokenizer is the
  guarded local CLIP BPE, shared by all pipelines.
- Warm pipelines are kept in an LRU keyed by the checkpoint's sha256 (or its resolved path when no hash is given);
  the least recently used one is dropped when `max_pipelines` would be exceeded.
- LoRAs (Civitai/kohya keys `lora_unet_*`, `lora_te_*`, `alpha`; or diffusers/PEFT keys) are loaded once per
  pipeline as NAMED adapters and stay cached on it (up to `max_adapters`); a request activates its own set with
  `set_adapters(names, weights)` and leaves the others inactive, or disables LoRA altogether when it has none. So
  swapping LoRA sets between requests never reloads the checkpoint and costs milliseconds.
- `variant(entry, "img2img" | "inpaint")` builds an Img2Img or Inpaint pipeline on the SAME components (no copy, no
  reload; adapters set on the entry apply to it too), for the editor.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import logging
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.studio.model_files import (
    EmbeddingUse,
    GenerationError,
    LoraUse,
    embedding_file_problem,
    file_key,
    inspect_checkpoint,
    lora_source,
)
from serving.studio.schedulers import make_scheduler
from serving.studio.sd_components import check_clip_tokenizer, load_clip_tokenizer

log = logging.getLogger(__name__)


def seeded_generator(seed: int):
    """A CPU torch.Generator: the same seed gives the same initial noise on every device (as diffusers advises)."""
    import torch

    return torch.Generator(device="cpu").manual_seed(int(seed))


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence diffusers/transformers progress bars, load reports and PEFT's multi-adapter warning while loading."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    d_level, t_level = dlog.get_verbosity(), tlog.get_verbosity()
    d_bars, t_bars = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*peft_config.*")
            warnings.filterwarnings("ignore", message=".*was active which is now deleted.*")
            yield
    finally:
        dlog.set_verbosity(d_level)
        tlog.set_verbosity(t_level)
        if d_bars:
            dlog.enable_progress_bar()
        if t_bars:
            tlog.enable_progress_bar()


def _present_adapters(pipe) -> set[str]:
    return {name for names in pipe.get_list_adapters().values() for name in names}


def _adapter_name(lora: LoraUse) -> str:
    """A PEFT-safe adapter name: readable stem + a short hash of the file identity (two files never collide)."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", lora.name)[:40].strip("_") or "lora"
    digest = (lora.sha256 or hashlib.sha256(lora.key.encode()).hexdigest()).lower()[:10]
    return f"{stem}_{digest}"


# ---------------------------------------------------------------------------------------------------------------------
# The manager


@dataclass
class LoadedPipeline:
    key: str
    path: Path
    pipe: Any
    base_scheduler_config: dict[str, Any]
    load_s: float
    adapters: OrderedDict[str, str] = field(default_factory=OrderedDict)  # LoraUse.key -> adapter name, LRU order
    active: tuple[tuple[str, float], ...] = ()
    variants: dict[str, Any] = field(default_factory=dict)
    embeddings: dict[str, EmbeddingUse] = field(default_factory=dict)  # token -> the embedding it calls

    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapters.values())


class PipelineManager:
    """Keeps up to `max_pipelines` SD 1.5 pipelines warm; LoRAs are cached per pipeline as named adapters.

    Not re-entrant per pipeline: hold `manager.lock` for a whole request (adapter state lives on the pipeline).
    """

    def __init__(
        self,
        config_dir: str | Path,
        *,
        device: str | None = None,
        dtype: Any = None,
        max_pipelines: int = 2,
        max_adapters: int = 8,
    ) -> None:
        import torch

        self.config_dir = Path(config_dir)
        if not (self.config_dir / "model_index.json").is_file():
            raise GenerationError(
                f"{self.config_dir} is not an SD config folder (write it with serving.studio.sd_components.write_sd15_config)"
            )
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype or (torch.float16 if str(self.device).startswith("cuda") else torch.float32)
        if max_pipelines < 1:
            raise ValueError("max_pipelines must be at least 1")
        self.max_pipelines = max_pipelines
        self.max_adapters = max(1, max_adapters)
        self.lock = threading.RLock()
        self.loads = 0  # checkpoint loads so far (tests and benchmarks count them)
        self.evictions: list[str] = []
        self.load_log: list[dict[str, Any]] = []
        self._pipes: OrderedDict[str, LoadedPipeline] = OrderedDict()
        self._tokenizer = None
        self._cross_attention_dim = self._read_json("unet/config.json").get("cross_attention_dim")
        self._text_width = self._read_json("text_encoder/config.json").get("hidden_size")

    def _read_json(self, rel: str) -> dict[str, Any]:
        import json

        return json.loads((self.config_dir / rel).read_text())

    # ---- tokenizer (guarded; each pipeline gets a copy)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_clip_tokenizer(self.config_dir / "tokenizer")
        return self._tokenizer

    # ---- checkpoints

    def is_warm(self, checkpoint_path: str | Path, sha256: str | None = None) -> bool:
        return file_key(sha256, checkpoint_path) in self._pipes

    def get(self, checkpoint_path: str | Path, sha256: str | None = None) -> tuple[LoadedPipeline, float]:
        """The warm pipeline of this checkpoint (loading it, and evicting the LRU one, on a miss); and the load time
        this call paid (0.0 when it was warm)."""
        with self.lock:
            key = file_key(sha256, checkpoint_path)
            entry = self._pipes.get(key)
            if entry is not None:
                self._pipes.move_to_end(key)
                return entry, 0.0
            while len(self._pipes) >= self.max_pipelines:
                self._evict_lru()
            entry = self._load(Path(checkpoint_path), key)
            self._pipes[key] = entry
            return entry, entry.load_s

    def _evict_lru(self) -> None:
        key, entry = self._pipes.popitem(last=False)
        self.evictions.append(key)
        entry.variants.clear()
        entry.pipe = None
        del entry
        gc.collect()
        if str(self.device).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        log.info("evicted pipeline %s", key[:16])

    def _load(self, path: Path, key: str) -> LoadedPipeline:
        from diffusers import StableDiffusionPipeline

        inspect_checkpoint(path, cross_attention_dim=self._cross_attention_dim)
        started = time.perf_counter()
        # Guarded (raises TokenizerError on a placeholder); a copy per pipeline, because textual inversions add
        # their words to the tokenizer while only this pipeline's text encoder gains their vectors.
        tokenizer = copy.deepcopy(self.tokenizer)
        try:
            with quiet_loading():
                pipe = StableDiffusionPipeline.from_single_file(
                    str(path),
                    config=str(self.config_dir),
                    local_files_only=True,
                    torch_dtype=self.dtype,
                    tokenizer=tokenizer,
                    safety_checker=None,
                    requires_safety_checker=False,
                )
        except Exception as exc:  # surface which file failed and why
            raise GenerationError(f"{path.name}: loading the single-file checkpoint failed: {exc}") from exc
        check_clip_tokenizer(pipe.tokenizer)
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        load_s = time.perf_counter() - started
        self.loads += 1
        self.load_log.append({"key": key, "path": str(path), "load_s": load_s})
        log.info("loaded %s in %.2f s", path.name, load_s)
        return LoadedPipeline(
            key=key, path=path, pipe=pipe, base_scheduler_config=dict(pipe.scheduler.config), load_s=load_s
        )

    # ---- schedulers

    def scheduler(self, entry: LoadedPipeline, name: str):
        return make_scheduler(name, entry.base_scheduler_config)

    # ---- LoRA adapters

    def set_loras(self, entry: LoadedPipeline, loras: Sequence[LoraUse]) -> dict[str, Any]:
        """Make exactly `loras` active on the pipeline at their weights; load those it has not seen (cached after).

        Returns {"lora_load_s", "lora_set_s", "loaded": [adapter names newly loaded]}.
        """
        with self.lock:
            try:
                return self._set_loras(entry, loras)
            except BaseException:
                entry.active = (("<unknown>", 0.0),)  # the pipeline's adapter state is uncertain: re-apply next time
                raise

    def _set_loras(self, entry: LoadedPipeline, loras: Sequence[LoraUse]) -> dict[str, Any]:
        pipe = entry.pipe
        merged: OrderedDict[str, tuple[LoraUse, float]] = OrderedDict()
        for lora in loras:  # the same file twice in one request: one adapter, weights added
            prev = merged.get(lora.key)
            merged[lora.key] = (lora, (prev[1] if prev else 0.0) + float(lora.weight))
        loaded: list[str] = []
        load_s = 0.0
        for key, (lora, _) in merged.items():
            if key in entry.adapters:
                entry.adapters.move_to_end(key)
                continue
            name = _adapter_name(lora)
            t0 = time.perf_counter()
            self._load_adapter(entry, lora, name)
            load_s += time.perf_counter() - t0
            entry.adapters[key] = name
            loaded.append(name)
        t1 = time.perf_counter()
        self._trim_adapters(entry, keep=set(merged))
        wanted = tuple((entry.adapters[key], weight) for key, (_, weight) in merged.items())
        if wanted != entry.active or loaded:
            if wanted:
                pipe.enable_lora()
                pipe.set_adapters([n for n, _ in wanted], adapter_weights=[w for _, w in wanted])
            elif entry.adapters:
                pipe.disable_lora()
            entry.active = wanted
        t2 = time.perf_counter()
        return {"lora_load_s": load_s, "lora_set_s": t2 - t1, "loaded": loaded}

    # ---- textual-inversion embeddings

    def embedding_problem(self, embedding: EmbeddingUse) -> str | None:
        """Why a textual inversion cannot be loaded here, found without loading it (None: it can): the file's
        problems (`embedding_file_problem`: a pickle, unreadable, another width than this text encoder's) or a
        name CLIP already has as a word."""
        path = Path(embedding.path)
        vocabulary = self.tokenizer.get_vocab()
        known = embedding.token in vocabulary or f"{embedding.token}</w>" in vocabulary
        if known and path.suffix.lower() == ".safetensors":
            return f"{embedding.name!r} is a word CLIP already has"
        return embedding_file_problem(path, self._text_width)

    def load_embeddings(self, entry: LoadedPipeline, embeddings: Sequence[EmbeddingUse]) -> list[str]:
        """Make each embedding's word call it on this pipeline (and its img2img/inpaint variants, which share its
        tokenizer and text encoder). Loaded once and kept: a word no prompt uses costs nothing. Returns the tokens
        loaded now; an embedding that cannot be loaded (embedding_problem) is a GenerationError. As in A1111, every
        loaded embedding answers to its name afterwards; `embeddings_in` tells which ones a prompt used."""
        loaded = []
        with self.lock:
            for embedding in embeddings:
                token, path = embedding.token, Path(embedding.path)
                if token in entry.embeddings:
                    if entry.embeddings[token].key != embedding.key:
                        raise GenerationError(f"two textual inversions are called {embedding.name!r}: the second "
                                              f"({path.name}) would replace the first on a warm pipeline")
                    continue
                if not path.is_file():
                    raise GenerationError(f"textual inversion file not found: {path}")
                problem = self.embedding_problem(embedding)
                if problem:
                    raise GenerationError(f"textual inversion {embedding.name!r} could not be loaded: {problem}")
                try:
                    with quiet_loading():
                        entry.pipe.load_textual_inversion(str(path), token=token)
                except Exception as exc:  # another model's width, a word CLIP already has, a corrupt file
                    raise GenerationError(f"textual inversion {embedding.name!r} ({path.name}) could not be "
                                          f"loaded: {exc}") from exc
                entry.embeddings[token] = embedding
                loaded.append(token)
        return loaded

    @staticmethod
    def embeddings_in(entry: LoadedPipeline, prompts: Sequence[str]) -> list[EmbeddingUse]:
        """The pipeline's loaded embeddings whose word occurs in the prompts (what the PNG's TI hashes list)."""
        from crawlers.a1111 import plain_text

        tokenizer = entry.pipe.tokenizer
        ids = {token for prompt in prompts
               for token in tokenizer(plain_text(prompt).lower(), add_special_tokens=False)["input_ids"]}
        return [embedding for token, embedding in entry.embeddings.items()
                if tokenizer.convert_tokens_to_ids(token) in ids]

    def _load_adapter(self, entry: LoadedPipeline, lora: LoraUse, name: str) -> None:
        try:
            import peft  # noqa: F401
        except ImportError as exc:  # diffusers' named adapters need the PEFT backend
            raise GenerationError("LoRA adapters need the `peft` package (pip install peft==0.21.2)") from exc
        path = Path(lora.path)
        if not path.is_file():
            raise GenerationError(f"LoRA file not found: {path}")
        try:
            source = lora_source(path)
            with quiet_loading():
                entry.pipe.load_lora_weights(source, adapter_name=name)
            if name not in _present_adapters(entry.pipe):
                raise GenerationError("none of its weights matches this model (a LoRA for another base model?)")
        except Exception as exc:  # an SDXL LoRA on SD 1.5, a LyCORIS format diffusers lacks, a corrupt file, ...
            try:
                if name in _present_adapters(entry.pipe):
                    with quiet_loading():
                        entry.pipe.delete_adapters(name)
            except Exception as cleanup:  # noqa: BLE001 - best effort; the load error is what matters
                log.warning("could not remove the partly loaded adapter %s: %s", name, cleanup)
            raise GenerationError(f"LoRA {lora.name!r} ({path.name}) could not be loaded: {exc}") from exc
        log.info("loaded LoRA %s as adapter %s", path.name, name)

    def _trim_adapters(self, entry: LoadedPipeline, keep: set[str]) -> None:
        """Delete the least recently used adapters beyond `max_adapters` (never one the request uses)."""
        while len(entry.adapters) > self.max_adapters:
            victim = next((k for k in entry.adapters if k not in keep), None)
            if victim is None:
                break
            name = entry.adapters.pop(victim)
            with quiet_loading():
                entry.pipe.delete_adapters(name)
            entry.active = tuple(a for a in entry.active if a[0] != name)

    # ---- variants for the editor

    def variant(self, entry: LoadedPipeline, kind: str):
        """A pipeline of another task built on the entry's components (shared, not copied): 'txt2img', 'img2img',
        'inpaint'. Cached on the entry."""
        if kind == "txt2img":
            return entry.pipe
        if kind not in entry.variants:
            from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

            cls = {"img2img": StableDiffusionImg2ImgPipeline, "inpaint": StableDiffusionInpaintPipeline}.get(kind)
            if cls is None:
                raise ValueError(f"unknown pipeline kind {kind!r} (txt2img, img2img, inpaint)")
            components = dict(entry.pipe.components)
            components["safety_checker"] = None
            variant = cls(**components, requires_safety_checker=False)
            variant.set_progress_bar_config(disable=True)
            entry.variants[kind] = variant
        return entry.variants[kind]
