"""The SD 1.5 pipeline manager on a tiny random SD 1.5-topology checkpoint: local configs, the guarded CLIP tokenizer,
single-file loading offline, the LRU of warm pipelines, schedulers, editor variants. No hub, no download."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("open_clip")

from serving.studio import sd_components as sdc

from testkit import tiny_sd
from serving.studio.model_files import GenerationError, inspect_checkpoint
from serving.studio.pipelines import PipelineManager, seeded_generator
from serving.studio.schedulers import (
    SCHEDULERS,
    a1111_sampler_name,
    make_scheduler,
    normalize_scheduler_name,
    scheduler_from_sampler,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny config folder, one random pipeline, and three distinct single-file checkpoints built from it."""
    root = tmp_path_factory.mktemp("sd-tiny")
    config = sdc.write_sd15_config(root / "config", "tiny")
    pipe = tiny_sd.build_random_pipeline(config, seed=0)
    ckpts = []
    for i in range(3):
        if i:
            with torch.no_grad():
                pipe.unet.conv_out.bias.add_(0.05)  # a different checkpoint (different bytes, different sha256)
        ckpts.append(tiny_sd.save_single_file(pipe, root / f"tiny-{i}.safetensors"))
    return {"root": root, "config": config, "ckpts": ckpts}


# ---- configs and tokenizer


def test_sd15_configs_have_the_real_numbers(tmp_path):
    folder = sdc.write_sd15_config(tmp_path / "sd15")
    unet = json.loads((folder / "unet/config.json").read_text())
    vae = json.loads((folder / "vae/config.json").read_text())
    te = json.loads((folder / "text_encoder/config.json").read_text())
    index = json.loads((folder / "model_index.json").read_text())
    assert unet["block_out_channels"] == [320, 640, 1280, 1280] and unet["cross_attention_dim"] == 768
    assert unet["attention_head_dim"] == 8 and unet["layers_per_block"] == 2 and unet["sample_size"] == 64
    assert vae["block_out_channels"] == [128, 256, 512, 512] and vae["latent_channels"] == 4
    assert vae["scaling_factor"] == 0.18215 and vae["sample_size"] == 512
    assert te["vocab_size"] == 49408 and te["hidden_size"] == 768 and te["num_hidden_layers"] == 12
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    for rel in ["scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json",
                "tokenizer/vocab.json", "tokenizer/merges.txt"]:
        assert (folder / rel).is_file(), rel
    # Idempotent: a second call leaves the folder alone.
    mtime = (folder / "unet/config.json").stat().st_mtime_ns
    sdc.write_sd15_config(folder)
    assert (folder / "unet/config.json").stat().st_mtime_ns == mtime


def test_sd15_configs_build_sd15_sized_models_with_the_original_key_layout(tmp_path):
    """On the meta device (no memory): the real configs give SD 1.5's parameter counts, and the original-layout keys
    our exporter writes are exactly what diffusers' single-file converters read back."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = sdc.write_sd15_config(tmp_path / "sd15")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(unet) == 859_520_964
    assert count(vae) == 83_653_863
    assert count(te) == 123_060_480

    class _Pipe:
        pass

    fake = _Pipe()
    fake.unet, fake.vae, fake.text_encoder = unet, vae, te
    original = tiny_sd.diffusers_to_original(fake)
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" in original
    assert "first_stage_model.decoder.up.0.block.0.conv1.weight" in original
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in original
    back_unet = convert_ldm_unet_checkpoint(original, dict(unet.config))
    assert set(back_unet) == set(unet.state_dict())
    back_vae = convert_ldm_vae_checkpoint(original, dict(vae.config))
    assert set(back_vae) == set(vae.state_dict())


def test_tokenizer_is_the_clip_bpe_and_matches_open_clip(tiny):
    import open_clip

    tok = sdc.load_clip_tokenizer(tiny["config"] / "tokenizer")
    assert len(tok) == 49408
    assert tok.model_max_length == 77 and tok.pad_token == "<|endoftext|>"
    reference = open_clip.get_tokenizer("ViT-L-14")
    for prompt in [
        "a photo of a cat",
        "masterpiece, best quality, 1girl, (detailed eyes:1.2), <lora:foo:0.7>",
        "Watercolor CASTLE on a hill at sunset!!",
        "naïve café, 3D render, 4k, highly-detailed",
    ]:
        ids = reference([prompt])[0].tolist()
        ids = ids[: ids.index(reference.eot_token_id) + 1]
        assert tok(prompt).input_ids == ids, prompt


def test_tokenizer_guard_rejects_a_placeholder(tiny, tmp_path):
    from transformers import CLIPTokenizer

    placeholder = CLIPTokenizer()  # what an offline load that found nothing amounts to
    assert len(placeholder) == 2
    with pytest.raises(sdc.TokenizerError):
        sdc.check_clip_tokenizer(placeholder)
    # A config folder whose tokenizer files are gone: the manager refuses before loading any checkpoint.
    broken = sdc.write_sd15_config(tmp_path / "broken", "tiny")
    for name in ("vocab.json", "merges.txt"):
        (broken / "tokenizer" / name).unlink()
    manager = PipelineManager(broken, device="cpu")
    with pytest.raises(sdc.TokenizerError):
        manager.get(tiny["ckpts"][0])
    assert manager.loads == 0


# ---- single-file loading and the LRU


def test_single_file_roundtrip_is_exact(tiny, monkeypatch):
    from diffusers.loaders import single_file
    from diffusers.utils import hub_utils

    def no_hub(*args, **kwargs):
        raise AssertionError(f"the hub was asked for {args or kwargs}")

    # Not even an attempt: every hub entry point diffusers' single-file path could reach fails the test.
    monkeypatch.setattr(single_file, "snapshot_download", no_hub)
    monkeypatch.setattr(single_file, "_download_diffusers_model_config_from_hub", no_hub)
    monkeypatch.setattr(hub_utils, "hf_hub_download", no_hub)
    monkeypatch.setattr(hub_utils, "snapshot_download", no_hub)
    manager = PipelineManager(tiny["config"], device="cpu")
    entry, load_s = manager.get(tiny["ckpts"][0])
    assert load_s > 0 and manager.loads == 1
    reference = tiny_sd.build_random_pipeline(tiny["config"], seed=0)  # the weights tiny-0 was saved from
    for name in ("unet", "vae", "text_encoder"):
        ours, ref = getattr(entry.pipe, name).state_dict(), getattr(reference, name).state_dict()
        assert set(ours) == set(ref), name
        assert all(torch.equal(ours[k], ref[k]) for k in ref), name
    assert entry.pipe.safety_checker is None
    assert len(entry.pipe.tokenizer) == 49408


def test_lru_keeps_the_most_recently_used_pipelines(tiny):
    a, b, c = tiny["ckpts"]
    manager = PipelineManager(tiny["config"], device="cpu", max_pipelines=2)
    manager.get(a)
    manager.get(b)
    assert manager.get(a)[1] == 0.0  # warm: no load paid
    manager.get(c)  # evicts b, the least recently used
    assert manager.loads == 3
    assert manager.is_warm(a) and manager.is_warm(c) and not manager.is_warm(b)
    assert manager.evictions == [str(Path(b).resolve())]
    assert manager.get(a)[1] == 0.0 and manager.loads == 3
    manager.get(b)  # reloads b, evicting c
    assert manager.loads == 4 and not manager.is_warm(c)


def test_keys_by_sha256_when_given(tiny):
    manager = PipelineManager(tiny["config"], device="cpu", max_pipelines=1)
    entry, _ = manager.get(tiny["ckpts"][0], "AB" * 32)
    assert entry.key == "ab" * 32
    assert manager.get(tiny["ckpts"][0], "ab" * 32)[1] == 0.0 and manager.loads == 1


def test_refuses_files_it_cannot_serve(tiny, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(GenerationError, match="safetensors"):
        inspect_checkpoint(tmp_path / "model.ckpt")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(GenerationError, match="readable"):
        inspect_checkpoint(garbage)
    sdxl = tmp_path / "sdxl.safetensors"
    save_file({"conditioner.embedders.1.model.token_embedding.weight": torch.zeros(2, 2),
               "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 4, 3, 3)}, str(sdxl))
    with pytest.raises(GenerationError, match="SDXL"):
        inspect_checkpoint(sdxl)
    # The tiny checkpoint against the real SD 1.5 config: a clear error, not a shape mismatch deep in diffusers.
    with pytest.raises(GenerationError, match="cross-attention"):
        inspect_checkpoint(tiny["ckpts"][0], cross_attention_dim=768)
    assert inspect_checkpoint(tiny["ckpts"][0], cross_attention_dim=32)["in_channels"] == 4


# ---- schedulers and variants


def test_schedulers_by_name_and_a1111_sampler_names(tiny):
    base = json.loads((tiny["config"] / "scheduler/scheduler_config.json").read_text())
    for name in SCHEDULERS:
        scheduler = make_scheduler(name, base)
        scheduler.set_timesteps(4)
        assert len(scheduler.timesteps) >= 4, name
        assert scheduler_from_sampler(a1111_sampler_name(name)) == name
    assert type(make_scheduler("dpm++_2m_karras", base)).__name__ == "DPMSolverMultistepScheduler"
    assert make_scheduler("dpm++_2m_karras", base).config.use_karras_sigmas is True
    assert normalize_scheduler_name("DPM++ 2M Karras") == "dpm++_2m_karras"
    assert normalize_scheduler_name("Euler a") == "euler_a"
    assert scheduler_from_sampler("DPM++ 2M", "Karras") == "dpm++_2m_karras"
    with pytest.raises(ValueError):
        normalize_scheduler_name("warp drive")


def test_img2img_and_inpaint_share_the_warm_components(tiny):
    from PIL import Image

    manager = PipelineManager(tiny["config"], device="cpu")
    entry, _ = manager.get(tiny["ckpts"][0])
    img2img = manager.variant(entry, "img2img")
    inpaint = manager.variant(entry, "inpaint")
    assert img2img.unet is entry.pipe.unet and inpaint.text_encoder is entry.pipe.text_encoder
    assert manager.variant(entry, "img2img") is img2img and manager.loads == 1
    init = Image.new("RGB", (64, 64), (120, 30, 200))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    img2img.scheduler = manager.scheduler(entry, "euler")
    out = img2img("a cat", image=init, strength=0.6, num_inference_steps=3, generator=seeded_generator(0)).images[0]
    assert out.size == (64, 64)
    inpaint.scheduler = manager.scheduler(entry, "ddim")
    out = inpaint("a cat", image=init, mask_image=mask, height=64, width=64, num_inference_steps=3,
                  generator=seeded_generator(0)).images[0]
    assert out.size == (64, 64)
    with pytest.raises(ValueError):
        manager.variant(entry, "video")
