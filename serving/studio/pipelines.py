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

from serving.studio.sd_components import check_tokenizer, load_clip_tokenizer

log = logging.getLogger(__name__)


class GenerationError(RuntimeError):
    """A checkpoint or LoRA could not be used (wrong family, corrupt file, missing dependency)."""


def file_key(sha256: str | None, path: str | Path) -> str:
    """What identifies a LoRA or embedding file on a warm pipeline: its sha256, else its resolved path."""
    return (sha256 or "").lower() or str(Path(path).resolve())


@dataclass(frozen=True)
class LoraUse:
    """One LoRA file to apply at `weight`; `name` is what the prompt's `<lora:name:w>` tag and the PNG show."""

    name: str
    path: str | Path
    sha256: str | None = None
    weight: float = 1.0

    @property
    def key(self) -> str:
        return file_key(self.sha256, self.path)


@dataclass(frozen=True)
class EmbeddingUse:
    """A textual-inversion embedding file; `name` is the word that calls it in a prompt (A1111: the file's stem,
    matched in any case)."""

    name: str
    path: str | Path
    sha256: str | None = None

    @property
    def token(self) -> str:
        return self.name.lower()

    @property
    def key(self) -> str:
        return file_key(self.sha256, self.path)


# ---------------------------------------------------------------------------------------------------------------------
# Schedulers by name

# name -> (diffusers class, config overrides, A1111 sampler name)
SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "dpm++_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, "DPM++ 2M"),
    "dpm++_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M Karras",
    ),
    "dpm++_2m_sde": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        "DPM++ 2M SDE",
    ),
    "dpm++_2m_sde_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M SDE Karras",
    ),
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}, "PLMS"),
    "lms": ("LMSDiscreteScheduler", {}, "LMS"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
}
_SAMPLER_TO_SCHEDULER = {a1111.lower(): name for name, (_, _, a1111) in SCHEDULERS.items()}


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


def a1111_sampler_name(scheduler: str) -> str:
    """The A1111 'Sampler' string of a scheduler name ('dpm++_2m_karras' -> 'DPM++ 2M Karras')."""
    return SCHEDULERS[normalize_scheduler_name(scheduler)][2]


def scheduler_from_sampler(sampler: str, schedule_type: str | None = None) -> str | None:
    """The scheduler name of an A1111 sampler string (and of its separate 'Schedule type', as newer A1111 writes)."""
    text = sampler.strip().lower()
    if schedule_type and schedule_type.strip().lower() == "karras" and not text.endswith("karras"):
        text += " karras"
    return _SAMPLER_TO_SCHEDULER.get(text)


def normalize_scheduler_name(name: str) -> str:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    key = {"dpmpp_2m": "dpm++_2m", "dpmpp_2m_karras": "dpm++_2m_karras", "plms": "pndm", "euler_ancestral": "euler_a"}.get(
        key, key
    )
    if key in SCHEDULERS:
        return key
    from_a1111 = scheduler_from_sampler(name)
    if from_a1111:
        return from_a1111
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")


def make_scheduler(name: str, base_config: dict[str, Any]):
    """A fresh scheduler of kind `name` built on the checkpoint's own scheduler config (betas, timestep spacing)."""
    import diffusers

    cls_name, overrides, _ = SCHEDULERS[normalize_scheduler_name(name)]
    return getattr(diffusers, cls_name).from_config(dict(base_config), **overrides)


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


# ---------------------------------------------------------------------------------------------------------------------
# Files


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _present_adapters(pipe) -> set[str]:
    return {name for names in pipe.get_list_adapters().values() for name in names}


def _adapter_name(lora: LoraUse) -> str:
    """A PEFT-safe adapter name: readable stem + a short hash of the file identity (two files never collide)."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", lora.name)[:40].strip("_") or "lora"
    digest = (lora.sha256 or hashlib.sha256(lora.key.encode()).hexdigest()).lower()[:10]
    return f"{stem}_{digest}"


def _kohya_text_encoder_workaround(path: Path) -> dict[str, Any] | None:
    """diffusers 0.42 converts kohya text-encoder keys to its old `to_q_lora` format and then recognises that format
    only by a `to_out_lora` key: a LoRA whose text-encoder part has no `out_proj` fails with "Could not automatically
    infer state dict type". For such a file return its tensors plus a zero `out_proj` pair (an exact no-op);
    otherwise None (the file is loaded as it is)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        te_downs = [k for k in keys if k.startswith("lora_te") and k.endswith(".lora_down.weight")]
        if not te_downs or any("_self_attn_out_proj." in k for k in te_downs):
            return None
        state = {k: f.get_tensor(k) for k in keys}
    import torch

    first = te_downs[0]
    layer = re.match(r"(lora_te\d?_text_model_encoder_layers_\d+)_", first)
    if layer is None:
        return None
    rank, width = state[first].shape[0], state[first].shape[1]
    prefix = f"{layer.group(1)}_self_attn_out_proj"
    dtype = state[first].dtype
    state[f"{prefix}.lora_down.weight"] = torch.zeros(rank, width, dtype=dtype)
    state[f"{prefix}.lora_up.weight"] = torch.zeros(width, rank, dtype=dtype)
    alpha = state.get(first.replace(".lora_down.weight", ".alpha"))  # the same alpha: no per-module alpha pattern
    state[f"{prefix}.alpha"] = alpha.clone() if alpha is not None else torch.tensor(float(rank))
    return state


def inspect_checkpoint(path: str | Path, *, cross_attention_dim: int | None = None) -> dict[str, Any]:
    """Read a `.safetensors` checkpoint's header (no tensor data) and refuse what an SD 1.x config cannot load."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise GenerationError(f"{path.name}: only .safetensors checkpoints are loaded (pickled .ckpt files are not)")
    if not path.is_file():
        raise GenerationError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            conv_in = "model.diffusion_model.input_blocks.0.0.weight"
            in_channels = f.get_slice(conv_in).get_shape()[1] if conv_in in keys else None
            attn2 = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
            context_dim = f.get_slice(attn2).get_shape()[1] if attn2 in keys else None
    except Exception as exc:  # safetensors raises several kinds on a corrupt header
        raise GenerationError(f"{path.name}: not a readable safetensors file ({exc})") from exc
    if any(k.startswith("conditioner.embedders.") for k in keys):
        raise GenerationError(f"{path.name}: an SDXL checkpoint; this pipeline serves SD 1.x checkpoints")
    if "cond_stage_model.model.token_embedding.weight" in keys:
        raise GenerationError(f"{path.name}: an SD 2.x checkpoint (OpenCLIP text encoder); SD 1.x only")
    if in_channels is None or not any(k.startswith("cond_stage_model.transformer.") for k in keys):
        raise GenerationError(f"{path.name}: not an SD 1.x single-file checkpoint (UNet or CLIP text encoder missing)")
    if in_channels != 4:
        raise GenerationError(f"{path.name}: a {in_channels}-channel UNet (inpainting checkpoint); not supported yet")
    if cross_attention_dim is not None and context_dim is not None and context_dim != cross_attention_dim:
        raise GenerationError(
            f"{path.name}: cross-attention width {context_dim} does not match the SD config ({cross_attention_dim})"
        )
    return {"keys": len(keys), "in_channels": in_channels, "cross_attention_dim": context_dim}


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

    def cached_keys(self) -> list[str]:
        """Keys of the warm pipelines, least recently used first."""
        return list(self._pipes)

    def is_warm(self, checkpoint_path: str | Path, sha256: str | None = None) -> bool:
        return self._key(checkpoint_path, sha256) in self._pipes

    @staticmethod
    def _key(path: str | Path, sha256: str | None) -> str:
        return (sha256 or "").lower() or str(Path(path).resolve())

    def get(self, checkpoint_path: str | Path, sha256: str | None = None) -> tuple[LoadedPipeline, float]:
        """The warm pipeline of this checkpoint (loading it, and evicting the LRU one, on a miss); and the load time
        this call paid (0.0 when it was warm)."""
        with self.lock:
            key = self._key(checkpoint_path, sha256)
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

    def evict(self, checkpoint_path: str | Path, sha256: str | None = None) -> bool:
        with self.lock:
            key = self._key(checkpoint_path, sha256)
            if key not in self._pipes:
                return False
            self._pipes.move_to_end(key, last=False)
            self._evict_lru()
            return True

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
        check_tokenizer(pipe.tokenizer)
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
        """Why a textual inversion cannot be loaded here, found without loading it (None: it can): not .safetensors
        (a .pt embedding is a pickle, which can run code when read), a name CLIP already has as a word, vectors of
        another width than this model's text encoder, an unreadable file."""
        from safetensors import safe_open

        path = Path(embedding.path)
        if path.suffix.lower() != ".safetensors":
            return f"only .safetensors files are loaded ({path.name} is a pickle, which can run code when read)"
        vocabulary = self.tokenizer.get_vocab()
        if embedding.token in vocabulary or f"{embedding.token}</w>" in vocabulary:
            return f"{embedding.name!r} is a word CLIP already has"
        try:
            with safe_open(str(path), framework="pt") as tensors:
                shapes = [tuple(tensors.get_slice(key).get_shape()) for key in tensors.keys()]  # noqa: SIM118
        except Exception as exc:  # noqa: BLE001 - a corrupt or truncated file
            return f"{path.name} could not be read: {exc}"
        if len(shapes) != 1 or len(shapes[0]) != 2 or (self._text_width and shapes[0][1] != self._text_width):
            return f"{path.name} holds tensors {shapes}; this model needs one (vectors, {self._text_width}) tensor"
        return None

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
            source: Any = str(path)
            patched = _kohya_text_encoder_workaround(path)
            if patched is not None:
                source = patched
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
