"""Generate an image from an already chosen checkpoint file and LoRA files, and save it with its parameters.

    manager = PipelineManager(write_sd15_config(zoo_home / "sd15-config"))
    result = generate(manager, checkpoint_path=ckpt, checkpoint_sha256=sha, loras=[LoraUse("ink", path, sha, 0.7)],
                      prompt="a castle", negative_prompt="blurry", steps=25, cfg=7, seed=42, width=512, height=512,
                      scheduler="dpm++_2m_karras")
    save_png(result, out / "castle.png", sidecar={"checkpoint": {"model_id": 1, "version_id": 2}, ...})

The checkpoint is loaded once and kept warm (LRU in the manager); LoRAs are named adapters cached on the pipeline, so
the next request with another LoRA set only swaps adapter weights. `result.timings` separates what this request paid
for loading (`load_s`, 0 when warm; `lora_load_s` for adapters first seen) from the denoising itself (`generate_s`).
With `init_image` (and `mask_image`) the same warm components run img2img (or inpainting) for the editor.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from crawlers.a1111 import strip_model_tags
from serving.studio.model_files import EmbeddingUse, LoraUse, file_sha256
from serving.studio.pipelines import PipelineManager, seeded_generator
from serving.studio.png_info import GenerationParameters, autov2, lora_tag, write_png, write_sidecar
from serving.studio.prompt_syntax import encode_prompts
from serving.studio.schedulers import a1111_sampler_name

__all__ = ["EmbeddingUse", "GenerationResult", "LoraUse", "generate", "save_png"]

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


@dataclass
class GenerationResult:
    image: Any  # PIL.Image.Image
    parameters_text: str
    parameters: GenerationParameters
    timings: dict[str, float]
    seed: int
    checkpoint_cached: bool  # True when the pipeline was already warm (this request paid no checkpoint load)
    metadata: dict[str, Any] = field(default_factory=dict)  # what was used: files, hashes, weights, scheduler


@dataclass(frozen=True)
class _Request:
    """A checked request: files with their hashes, prompts without model tags, a drawn seed, the pipeline kind."""

    kind: str  # txt2img, img2img or inpaint
    checkpoint_path: Path
    sha256: str
    loras: list[LoraUse]
    embeddings: list[EmbeddingUse]
    prompt: str
    negative_prompt: str
    steps: int
    cfg: float
    seed: int
    width: int
    height: int
    scheduler: str
    clip_skip: int | None
    init_image: Any
    mask_image: Any
    strength: float


@dataclass(frozen=True)
class _Run:
    """What running a request gave: the image, the embeddings its prompts used, what loading cost."""

    image: Any
    embeddings: list[EmbeddingUse]
    lora_info: dict[str, Any]
    load_s: float
    generate_s: float
    total_s: float


def _sha256_of(path: str | Path) -> str:
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(path)
    return _SHA_CACHE[key]


def generate(
    manager: PipelineManager,
    *,
    checkpoint_path: str | Path,
    checkpoint_sha256: str | None = None,
    loras: Sequence[LoraUse] = (),
    embeddings: Sequence[EmbeddingUse] = (),
    prompt: str,
    negative_prompt: str = "",
    steps: int = 25,
    cfg: float = 7.0,
    seed: int | None = -1,
    width: int = 512,
    height: int = 512,
    scheduler: str = "dpm++_2m_karras",
    model_name: str | None = None,
    clip_skip: int | None = None,
    init_image: Any = None,
    mask_image: Any = None,
    strength: float = 0.75,
) -> GenerationResult:
    """One image. `seed` -1 or None draws a random seed (reported in the result and the PNG parameters). The
    prompts are read as A1111 reads them (emphasis, BREAK, any length: serving/studio/prompt_syntax.py);
    `embeddings` are textual inversions to load first, and, as in A1111, every embedding loaded on the pipeline
    answers to its name (the PNG's TI hashes list the ones the prompts use); `clip_skip` counts as A1111 does (1 =
    last CLIP layer, 2 = the one before). `scheduler` is a name of `serving.studio.schedulers.SCHEDULERS` ('euler',
    'euler_a', 'dpm++_2m', 'dpm++_2m_karras', 'ddim', 'pndm', ...) or an A1111 sampler string ('DPM++ 2M
    Karras')."""
    _check(steps, width, height, init_image, mask_image, strength)
    request = _Request(
        kind="inpaint" if mask_image is not None else "img2img" if init_image is not None else "txt2img",
        checkpoint_path=Path(checkpoint_path), sha256=(checkpoint_sha256 or _sha256_of(checkpoint_path)).lower(),
        loras=[lora if lora.sha256 else replace(lora, sha256=_sha256_of(lora.path)) for lora in loras],
        embeddings=[used if used.sha256 else replace(used, sha256=_sha256_of(used.path)) for used in embeddings],
        prompt=strip_model_tags(prompt), negative_prompt=strip_model_tags(negative_prompt), steps=int(steps),
        cfg=float(cfg), seed=secrets.randbelow(2**32) if seed is None or int(seed) < 0 else int(seed),
        width=int(width), height=int(height), scheduler=scheduler, clip_skip=clip_skip, init_image=init_image,
        mask_image=mask_image, strength=float(strength))
    return _result(request, _run(manager, request), model_name or request.checkpoint_path.stem)


def _check(steps: int, width: int, height: int, init_image: Any, mask_image: Any, strength: float) -> None:
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if width % 8 or height % 8 or width < 8 or height < 8:
        raise ValueError(f"width and height must be positive multiples of 8 (got {width}x{height})")
    if mask_image is not None and init_image is None:
        raise ValueError("mask_image needs init_image")
    if init_image is not None and not (0.0 < strength <= 1.0 and int(steps * strength) >= 1):
        raise ValueError(f"strength {strength} with {steps} steps leaves no denoising step (needs steps*strength >= 1)")


def _run(manager: PipelineManager, request: _Request) -> _Run:
    """The request on its warm pipeline (loading what it lacks), under the manager's lock."""
    started = time.perf_counter()
    with manager.lock:
        entry, load_s = manager.get(request.checkpoint_path, request.sha256)
        lora_info = manager.set_loras(entry, request.loras)
        manager.load_embeddings(entry, request.embeddings)
        used = manager.embeddings_in(entry, (request.prompt, request.negative_prompt))  # earlier ones included
        pipe = manager.variant(entry, request.kind)
        pipe.scheduler = manager.scheduler(entry, request.scheduler)
        call = _call(pipe, request)
        t0 = time.perf_counter()
        image = pipe(**call).images[0]
        generate_s = time.perf_counter() - t0
    return _Run(image, used, lora_info, load_s, generate_s, time.perf_counter() - started)


def _call(pipe, request: _Request) -> dict[str, Any]:
    """The pipeline call's arguments: encoded prompts, sampling, and the size or the init image (and mask)."""
    call: dict[str, Any] = {
        **encode_prompts(pipe, request.prompt, request.negative_prompt, request.clip_skip),
        "num_inference_steps": request.steps,
        "guidance_scale": request.cfg,
        "generator": seeded_generator(request.seed),
    }
    size = (request.width, request.height)
    if request.kind == "txt2img":
        call.update(height=request.height, width=request.width)
    else:
        call.update(image=request.init_image.convert("RGB").resize(size), strength=request.strength)
        if request.kind == "inpaint":
            call.update(mask_image=request.mask_image.convert("L").resize(size))
            call.update(height=request.height, width=request.width)
    return call


def _result(request: _Request, ran: _Run, model_name: str) -> GenerationResult:
    tags = [lora_tag(lora.name, lora.weight) for lora in request.loras]
    params = GenerationParameters(
        prompt=", ".join([p for p in [request.prompt] if p] + tags) if tags else request.prompt,
        negative_prompt=request.negative_prompt,
        steps=request.steps,
        sampler=a1111_sampler_name(request.scheduler),
        cfg_scale=request.cfg,
        seed=request.seed,
        width=ran.image.width,
        height=ran.image.height,
        model_hash=autov2(request.sha256),
        model=model_name,
        lora_hashes={lora.name: autov2(lora.sha256) or "" for lora in request.loras},
        ti_hashes={embedding.name: autov2(embedding.sha256) or "" for embedding in ran.embeddings},
        clip_skip=request.clip_skip,
        denoising_strength=request.strength if request.kind != "txt2img" else None,
    )
    timings = {"load_s": ran.load_s, "lora_load_s": ran.lora_info["lora_load_s"],
               "lora_set_s": ran.lora_info["lora_set_s"], "generate_s": ran.generate_s, "total_s": ran.total_s}
    return GenerationResult(image=ran.image, parameters_text=params.to_text(), parameters=params, timings=timings,
                            seed=request.seed, checkpoint_cached=ran.load_s == 0.0,
                            metadata=_metadata(request, ran, params.model))


def _metadata(request: _Request, ran: _Run, model: str | None) -> dict[str, Any]:
    """What the image was made with: the files (paths, hashes, weights), the scheduler, the adapters loaded now."""
    sha = request.sha256
    return {
        "kind": request.kind,
        "scheduler": request.scheduler,
        "checkpoint": {"path": str(request.checkpoint_path), "sha256": sha, "autov2": autov2(sha), "name": model},
        "loras": [
            {"name": lora.name, "path": str(lora.path), "sha256": lora.sha256, "autov2": autov2(lora.sha256),
             "weight": lora.weight}
            for lora in request.loras
        ],
        "adapters_loaded_now": ran.lora_info["loaded"],
        "embeddings": [
            {"name": embedding.name, "path": str(embedding.path), "sha256": embedding.sha256,
             "autov2": autov2(embedding.sha256)}
            for embedding in ran.embeddings
        ],
    }


def save_png(result: GenerationResult, path: str | Path, sidecar: dict[str, Any] | None = None) -> Path:
    """Write the PNG (A1111 'parameters' chunk) and `<name>.json` beside it: `full_sidecar(result, sidecar)`."""
    path = write_png(result.image, path, result.parameters_text)
    write_sidecar(path, full_sidecar(result, sidecar))
    return path


def full_sidecar(result: GenerationResult, sidecar: dict[str, Any] | None = None) -> dict[str, Any]:
    """The caller's `sidecar` (model and version ids, query, ...) plus what was generated with (`generation`:
    files, hashes, weights, seed, timings)."""
    data = dict(sidecar or {})
    data.setdefault("parameters", result.parameters_text)
    data["generation"] = {
        **result.metadata,
        "seed": result.seed,
        "timings": result.timings,
        "checkpoint_cached": result.checkpoint_cached,
        "version": result.parameters.version,
    }
    return data
