"""Checkpoint, LoRA and textual-inversion files: what a request uses (`LoraUse`, `EmbeddingUse`), their hashes, and
the checks a file passes before a pipeline loads it (read from headers, never by unpickling)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class GenerationError(RuntimeError):
    """A checkpoint or LoRA could not be used (wrong family, corrupt file, missing dependency)."""


def file_key(sha256: str | None, path: str | Path) -> str:
    """What identifies a checkpoint, LoRA or embedding file on a warm pipeline: its sha256, else its resolved path."""
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


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def inspect_checkpoint(path: str | Path, *, cross_attention_dim: int | None = None) -> dict[str, Any]:
    """Read a `.safetensors` checkpoint's header (no tensor data) and refuse what an SD 1.x config cannot load."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise GenerationError(f"{path.name}: only .safetensors checkpoints are loaded (pickled .ckpt files are not)")
    if not path.is_file():
        raise GenerationError(f"checkpoint file not found: {path}")
    keys, in_channels, context_dim = _checkpoint_header(path)
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


def _checkpoint_header(path: Path) -> tuple[set[str], int | None, int | None]:
    """The checkpoint's keys, its UNet's input channels and its cross-attention width (None when absent)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            conv_in = "model.diffusion_model.input_blocks.0.0.weight"
            in_channels = f.get_slice(conv_in).get_shape()[1] if conv_in in keys else None
            attn2 = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
            context_dim = f.get_slice(attn2).get_shape()[1] if attn2 in keys else None
    except Exception as exc:  # safetensors raises several kinds on a corrupt header
        raise GenerationError(f"{path.name}: not a readable safetensors file ({exc})") from exc
    return keys, in_channels, context_dim


def lora_source(path: Path) -> str | dict[str, Any]:
    """What to hand `load_lora_weights` for a LoRA file: its path, or its tensors when diffusers needs a workaround.

    diffusers 0.42 converts kohya text-encoder keys to its old `to_q_lora` format and then recognises that format
    only by a `to_out_lora` key: a LoRA whose text-encoder part has no `out_proj` fails with "Could not automatically
    infer state dict type". Such a file is handed over as its tensors plus a zero `out_proj` pair (an exact no-op)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        te_downs = [k for k in keys if k.startswith("lora_te") and k.endswith(".lora_down.weight")]
        if not te_downs or any("_self_attn_out_proj." in k for k in te_downs):
            return str(path)
        state = {k: f.get_tensor(k) for k in keys}
    import torch

    first = te_downs[0]
    layer = re.match(r"(lora_te\d?_text_model_encoder_layers_\d+)_", first)
    if layer is None:
        return str(path)
    rank, width = state[first].shape[0], state[first].shape[1]
    prefix = f"{layer.group(1)}_self_attn_out_proj"
    dtype = state[first].dtype
    state[f"{prefix}.lora_down.weight"] = torch.zeros(rank, width, dtype=dtype)
    state[f"{prefix}.lora_up.weight"] = torch.zeros(width, rank, dtype=dtype)
    alpha = state.get(first.replace(".lora_down.weight", ".alpha"))  # the same alpha: no per-module alpha pattern
    state[f"{prefix}.alpha"] = alpha.clone() if alpha is not None else torch.tensor(float(rank))
    return state


def embedding_file_problem(path: Path, width: int | None) -> str | None:
    """Why a textual-inversion file cannot be loaded into a text encoder of `width` (None: it can): not
    .safetensors (a .pt embedding is a pickle, which can run code when read), unreadable, or not one
    (vectors, width) tensor."""
    from safetensors import safe_open

    if path.suffix.lower() != ".safetensors":
        return f"only .safetensors files are loaded ({path.name} is a pickle, which can run code when read)"
    try:
        with safe_open(str(path), framework="pt") as tensors:
            shapes = [tuple(tensors.get_slice(key).get_shape()) for key in tensors.keys()]  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001 - a corrupt or truncated file
        return f"{path.name} could not be read: {exc}"
    if len(shapes) != 1 or len(shapes[0]) != 2 or (width and shapes[0][1] != width):
        return f"{path.name} holds tensors {shapes}; this model needs one (vectors, {width}) tensor"
    return None
