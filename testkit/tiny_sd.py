"""Tiny random-initialised Stable Diffusion 1.5-topology pipelines, their single-file (A1111/ldm) checkpoints and
random kohya LoRAs: what the tests and benchmarks generate with, since no real SD weights can be downloaded here.

The tiny pipeline has SD 1.5's classes and block/layer counts (so the same checkpoint key layout) with small widths
(`write_sd15_config(folder, "tiny")`); `save_single_file` writes it the way Civitai checkpoints are laid out, so it
goes through the very loader the product uses for real checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serving.studio.sd_components import load_clip_tokenizer

def build_random_pipeline(config_dir: str | Path, *, seed: int = 0):
    """A StableDiffusionPipeline with random weights (seeded) from the configs in `config_dir` (tests, benchmarks)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    config_dir = Path(config_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder"))
    # Random init leaves the UNet's output near zero; give every weight some spread so images depend on the inputs.
    with torch.no_grad():
        for module in (unet, vae, text_encoder):
            for p in module.parameters():
                if p.dim() > 1 and p.abs().max() == 0:
                    p.normal_(0, 0.02)
    scheduler = PNDMScheduler.from_pretrained(config_dir, subfolder="scheduler")
    tokenizer = load_clip_tokenizer(config_dir / "tokenizer")
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _unet_layer_map() -> list[tuple[str, str]]:
    """(original prefix, diffusers prefix) of the SD 1.x UNet: 4 blocks, 2 layers per block (SD 1.5 and tiny)."""
    pairs: list[tuple[str, str]] = []
    for i in range(4):
        for j in range(2):
            pairs.append((f"input_blocks.{3 * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if i < 3:
                pairs.append((f"input_blocks.{3 * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(3):
            pairs.append((f"output_blocks.{3 * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if i > 0:
                pairs.append((f"output_blocks.{3 * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < 3:
            pairs.append((f"input_blocks.{3 * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            pairs.append((f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}.", f"up_blocks.{i}.upsamplers.0."))
    pairs.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        pairs.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    return pairs


_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]


def _unet_key(key: str) -> str:
    for hf, sd in _UNET_TOP.items():
        if key.startswith(hf):
            return sd + key[len(hf) :]
    if "resnets" in key:
        for hf, sd in _UNET_RESNET:
            key = key.replace(hf, sd)
    for sd, hf in _unet_layer_map():
        key = key.replace(hf, sd)
    return key


def _vae_key(key: str) -> str:
    pairs = [("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out"), ("mid.attn_1.", "mid_block.attentions.0.")]
    for i in range(4):
        for j in range(2):
            pairs.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < 3:
            pairs.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            pairs.append((f"up.{3 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        for j in range(3):
            pairs.append((f"decoder.up.{3 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    for i in range(2):
        pairs.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))
    for sd, hf in pairs:
        key = key.replace(hf, sd)
    if "attn_1." in key:
        for sd, hf in [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0.")]:
            key = key.replace(hf, sd)
    return key


def diffusers_to_original(pipe) -> dict[str, Any]:
    """The pipeline's weights in the original SD 1.x single-file layout (what A1111 and Civitai checkpoints hold):
    `model.diffusion_model.*`, `first_stage_model.*` (attention as 1x1 convs) and `cond_stage_model.transformer.*`."""
    out: dict[str, Any] = {}
    for k, v in pipe.unet.state_dict().items():
        out["model.diffusion_model." + _unet_key(k)] = v
    for k, v in pipe.vae.state_dict().items():
        new = _vae_key(k)
        if "mid.attn_1." in new and new.endswith(".weight") and v.dim() == 2:
            v = v.reshape(*v.shape, 1, 1)  # linear -> 1x1 conv, as in the original autoencoder
        out["first_stage_model." + new] = v
    for k, v in pipe.text_encoder.state_dict().items():
        # transformers 5 names CLIPTextModel weights without the `text_model.` level the original layout has
        out["cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k)] = v
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def save_single_file(pipe, path: str | Path, *, dtype=None) -> Path:
    """Save the pipeline as ONE `.safetensors` file in the original SD layout (as a Civitai checkpoint)."""
    from safetensors.torch import save_file

    state = diffusers_to_original(pipe)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt", "zoo": "sd15-single-file"})
    return path


# Module paths (diffusers names) a small kohya LoRA touches: two UNet attention projections and one CLIP layer.
DEFAULT_LORA_TARGETS = (
    "unet:down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "unet:down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
    "unet:mid_block.attentions.0.transformer_blocks.0.attn2.to_v",
    "unet:up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "text_encoder:text_model.encoder.layers.0.self_attn.q_proj",
    "text_encoder:text_model.encoder.layers.0.self_attn.v_proj",
)


def write_random_kohya_lora(
    pipe,
    path: str | Path,
    *,
    targets: tuple[str, ...] = DEFAULT_LORA_TARGETS,
    rank: int = 4,
    alpha: float = 4.0,
    scale: float = 0.5,
    seed: int = 0,
) -> Path:
    """Write a random LoRA for `pipe` in Civitai/kohya key format (`lora_unet_<module>.lora_down.weight`,
    `.lora_up.weight`, `.alpha`; `lora_te_<module>...` for the text encoder) as one `.safetensors` file."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Any] = {}
    for target in targets:
        component, module_path = target.split(":", 1)
        model = getattr(pipe, component)
        lookup = module_path
        if component == "text_encoder" and lookup.startswith("text_model."):
            names = dict(model.named_modules())
            lookup = lookup if lookup in names else lookup[len("text_model.") :]
        module = model.get_submodule(lookup)
        out_f, in_f = module.weight.shape[:2]
        prefix = ("lora_unet_" if component == "unet" else "lora_te_") + module_path.replace(".", "_")
        state[f"{prefix}.lora_down.weight"] = torch.randn(rank, in_f, generator=gen) * scale
        state[f"{prefix}.lora_up.weight"] = torch.randn(out_f, rank, generator=gen) * scale
        state[f"{prefix}.alpha"] = torch.tensor(float(alpha))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank)})
    return path
