"""Local Stable Diffusion 1.5 component configs, written to disk in diffusers layout, so nothing comes from the hub.

`from_single_file` needs, beside the checkpoint's weights, the configs of every component (UNet, VAE, CLIP text
encoder, scheduler, tokenizer files). Without a local folder it downloads them from the Hugging Face hub, which
this project never reaches at run time. `write_sd15_config(folder)` writes that folder:

    model_index.json                     StableDiffusionPipeline, no safety checker
    unet/config.json                     UNet2DConditionModel (SD 1.5 numbers)
    vae/config.json                      AutoencoderKL (scaling_factor 0.18215)
    text_encoder/config.json             CLIPTextModel (ViT-L/14 text tower: vocab 49408, width 768, 12 layers)
    scheduler/scheduler_config.json      PNDMScheduler as SD 1.5 ships it
    tokenizer/vocab.json, merges.txt     the real CLIP BPE, converted from open_clip's bundled vocabulary
    feature_extractor/preprocessor_config.json

`variant="tiny"` writes the same topology (same classes, same block/layer counts, hence the same checkpoint key
layout) with small widths: random weights built from it make a single-file checkpoint that goes through the very
loader Civitai checkpoints go through. `diffusers_to_original(pipe)` produces that original (A1111/ldm) key layout.

Tokenizers are guarded (`check_clip_tokenizer`): an offline load of a missing tokenizer silently yields a 2-token
placeholder, and prompts would then encode to nothing.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

CLIP_VOCAB_SIZE = 49408
CLIP_CONTEXT_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
CONFIG_VERSION = "1"  # bump when anything written below changes; the stamp file makes rewriting idempotent
VARIANTS = ("sd15", "tiny")


class TokenizerError(RuntimeError):
    """The tokenizer is not the CLIP BPE (typically the 2-token placeholder of an offline load that found nothing)."""


# --------------------------------------------------------------------------------------------------------------------
# Component configs


def _unet_config(variant: str) -> dict[str, Any]:
    real = variant == "sd15"
    return {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280] if real else [32, 64, 64, 64],
        "center_input_sample": False,
        "cross_attention_dim": 768 if real else 32,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64 if real else 8,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    }


def _vae_config(variant: str) -> dict[str, Any]:
    real = variant == "sd15"
    return {
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512] if real else [32, 32, 64, 64],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 512 if real else 64,
        "scaling_factor": 0.18215,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    }


def _text_encoder_config(variant: str) -> dict[str, Any]:
    real = variant == "sd15"
    # The SD 1.5 text encoder is OpenAI CLIP ViT-L/14's text tower; the odd bos/eos/pad ids are those of its config
    # (pooling then takes the argmax token, i.e. <|endoftext|>; SD uses the last hidden state anyway).
    return {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": 768 if real else 32,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 3072 if real else 64,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": CLIP_CONTEXT_LENGTH,
        "num_attention_heads": 12 if real else 4,
        "num_hidden_layers": 12 if real else 2,
        "pad_token_id": 1,
        "projection_dim": 768 if real else 32,
        "torch_dtype": "float32",
        "vocab_size": CLIP_VOCAB_SIZE,
    }


SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

FEATURE_EXTRACTOR_CONFIG: dict[str, Any] = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}

MODEL_INDEX: dict[str, Any] = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def component_configs(variant: str = "sd15") -> dict[str, dict[str, Any]]:
    """{relative path: JSON} of every config file of the variant (tokenizer files excepted)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown SD config variant {variant!r} (expected one of {VARIANTS})")
    return {
        "model_index.json": MODEL_INDEX,
        "unet/config.json": _unet_config(variant),
        "vae/config.json": _vae_config(variant),
        "text_encoder/config.json": _text_encoder_config(variant),
        "scheduler/scheduler_config.json": SCHEDULER_CONFIG,
        "feature_extractor/preprocessor_config.json": FEATURE_EXTRACTOR_CONFIG,
    }


# --------------------------------------------------------------------------------------------------------------------
# The CLIP BPE tokenizer, from open_clip's bundled vocabulary


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map (the same table open_clip and transformers use)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def open_clip_bpe_path() -> Path:
    """The BPE merges file shipped inside the open_clip wheel (the real CLIP vocabulary)."""
    import open_clip.tokenizer

    return Path(open_clip.tokenizer.default_bpe())


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """CLIP's vocab (token -> id, 49408 entries) and its 48894 merges, built exactly as CLIP/open_clip build them."""
    with gzip.open(open_clip_bpe_path()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m.split()) for m in merges]
    vocab += [BOS_TOKEN, EOS_TOKEN]
    if len(vocab) != CLIP_VOCAB_SIZE or len(set(vocab)) != CLIP_VOCAB_SIZE:
        raise TokenizerError(f"open_clip BPE file gave {len(vocab)} tokens ({len(set(vocab))} distinct), not 49408")
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_clip_tokenizer(folder: str | Path) -> Path:
    """Write a transformers CLIPTokenizer (vocab.json, merges.txt, configs) into `folder`, as SD 1.5 ships it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CLIP_CONTEXT_LENGTH,
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def check_clip_tokenizer(tokenizer: Any) -> Any:
    """Raise TokenizerError unless `tokenizer` is the full CLIP BPE (49408 tokens, BOS/EOS where CLIP has them)."""
    size = len(tokenizer)
    if size != CLIP_VOCAB_SIZE:
        raise TokenizerError(
            f"tokenizer has {size} tokens, not {CLIP_VOCAB_SIZE}: this is not the CLIP BPE (an offline load of a "
            "missing tokenizer returns a placeholder). Rewrite the local SD config folder (write_sd15_config)."
        )
    ids = tokenizer("a photo of a cat").input_ids
    if ids[0] != CLIP_VOCAB_SIZE - 2 or ids[-1] != CLIP_VOCAB_SIZE - 1 or len(ids) < 5:
        raise TokenizerError(f"tokenizer does not encode like CLIP (got ids {ids[:8]}...)")
    return tokenizer


def load_clip_tokenizer(folder: str | Path):
    """The CLIPTokenizer in `folder`, guarded."""
    from transformers import CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # a missing or broken folder is the same failure as a placeholder
        raise TokenizerError(f"no CLIP tokenizer could be loaded from {folder}: {exc}") from exc
    return check_clip_tokenizer(tokenizer)


# --------------------------------------------------------------------------------------------------------------------
# The folder


def write_sd15_config(folder: str | Path, variant: str = "sd15", *, force: bool = False) -> Path:
    """Write the diffusers-layout config folder of SD 1.5 (or its tiny twin) into `folder`; return `folder`.

    Idempotent: a folder whose stamp matches the variant and CONFIG_VERSION is left as it is.
    """
    folder = Path(folder)
    stamp = folder / ".zoo-sd-config"
    expected = f"{variant} {CONFIG_VERSION}"
    if not force and stamp.exists() and stamp.read_text().strip() == expected:
        return folder
    for rel, content in component_configs(variant).items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    write_clip_tokenizer(folder / "tokenizer")
    stamp.write_text(expected + "\n")
    return folder


def default_config_dir(zoo_home: str | Path, variant: str = "sd15") -> Path:
    """Where the config folder lives under the project's home (`$ZOO_HOME/sd15-config`), written if missing."""
    name = "sd15-config" if variant == "sd15" else f"sd15-{variant}-config"
    return write_sd15_config(Path(zoo_home) / name, variant)
