"""generate() on a tiny random SD 1.5-topology checkpoint (one original-layout .safetensors file, loaded through the
single-file path Civitai checkpoints take) with tiny kohya-format LoRAs; PNG parameters and the sidecar."""

from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
np = pytest.importorskip("numpy")

from serving.studio import sd_components as sdc

from testkit import tiny_sd
from crawlers.a1111 import strip_model_tags
from serving.studio.generate import LoraUse, generate, save_png
from serving.studio.model_files import file_sha256
from serving.studio.pipelines import PipelineManager
from serving.studio.png_info import GenerationParameters, parse_parameters, read_png_parameters

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SIZE = 64
STEPS = 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd-gen")
    config = sdc.write_sd15_config(root / "config", "tiny")
    pipe = tiny_sd.build_random_pipeline(config, seed=0)
    ckpt = tiny_sd.save_single_file(pipe, root / "tiny-ckpt.safetensors")
    loras = {
        "ink": tiny_sd.write_random_kohya_lora(pipe, root / "ink.safetensors", seed=1),
        "neon": tiny_sd.write_random_kohya_lora(pipe, root / "neon.safetensors", seed=2),
        # text-encoder part without out_proj: needs the loader's workaround for diffusers' format detection
        "te_qv": tiny_sd.write_random_kohya_lora(
            pipe,
            root / "te_qv.safetensors",
            seed=3,
            targets=(
                "unet:down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q",
                "text_encoder:text_model.encoder.layers.1.self_attn.q_proj",
                "text_encoder:text_model.encoder.layers.1.self_attn.v_proj",
            ),
        ),
    }
    shas = {name: file_sha256(path) for name, path in loras.items()}
    return {"config": config, "ckpt": ckpt, "sha": file_sha256(ckpt), "loras": loras, "shas": shas}


def lora(tiny, name, weight):
    return LoraUse(name, tiny["loras"][name], tiny["shas"][name], weight)


def run(manager, tiny, loras=(), seed=7, **kw):
    args = {"prompt": "a watercolor castle on a hill", "negative_prompt": "blurry", "steps": STEPS, "cfg": 7.0,
            "seed": seed, "width": SIZE, "height": SIZE, "scheduler": "euler"}
    args.update(kw)
    return generate(manager, checkpoint_path=tiny["ckpt"], checkpoint_sha256=tiny["sha"], loras=list(loras), **args)


def pixels(result):
    return np.asarray(result.image, dtype=np.int16)


@pytest.fixture(scope="module")
def manager(tiny):
    return PipelineManager(tiny["config"], device="cpu", max_pipelines=2)


def test_kohya_lora_file_is_in_civitai_key_format(tiny):
    from safetensors import safe_open

    with safe_open(str(tiny["loras"]["ink"]), framework="pt") as f:
        keys = set(f.keys())
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight" in keys
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.alpha" in keys
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
    assert len(keys) == 18  # six modules x (down, up, alpha)


def test_generates_the_requested_size_offline_and_reports_timings(manager, tiny):
    first = run(manager, tiny)
    assert first.image.size == (SIZE, SIZE) and first.image.mode == "RGB"
    assert not first.checkpoint_cached and first.timings["load_s"] > 0
    wide = run(manager, tiny, width=2 * SIZE)
    assert wide.image.size == (2 * SIZE, SIZE)
    assert wide.checkpoint_cached and wide.timings["load_s"] == 0.0  # a warm generation pays nothing for loading
    assert wide.timings["generate_s"] > 0 and wide.timings["total_s"] >= wide.timings["generate_s"]
    assert manager.loads == 1
    assert pixels(first).std() > 1  # not a blank image


def test_seed_controls_the_image(manager, tiny):
    a, b, c = run(manager, tiny, seed=1), run(manager, tiny, seed=1), run(manager, tiny, seed=2)
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(c))
    r = run(manager, tiny, seed=-1)
    assert 0 <= r.seed < 2**32 and f"Seed: {r.seed}," in r.parameters_text


def test_lora_weight_changes_the_image_and_zero_is_none(manager, tiny):
    none = pixels(run(manager, tiny))
    full = pixels(run(manager, tiny, [lora(tiny, "ink", 1.0)]))
    zero = pixels(run(manager, tiny, [lora(tiny, "ink", 0.0)]))
    assert np.abs(full - none).max() > 0
    assert np.array_equal(zero, none)


def test_text_encoder_only_qv_lora_loads_and_acts(manager, tiny):
    none = pixels(run(manager, tiny))
    with_it = pixels(run(manager, tiny, [lora(tiny, "te_qv", 1.0)]))
    assert np.abs(with_it - none).max() > 0
    assert np.array_equal(pixels(run(manager, tiny, [lora(tiny, "te_qv", 0.0)])), none)


def test_swapping_lora_sets_never_reloads_and_matches_a_fresh_pipeline(tiny):
    manager = PipelineManager(tiny["config"], device="cpu")
    set_a = [lora(tiny, "ink", 0.8)]
    set_b = [lora(tiny, "neon", 0.6), lora(tiny, "ink", 0.3)]
    sequence = [("none", []), ("a", set_a), ("b", set_b), ("a", set_a), ("none", []), ("b", set_b)]
    images, loaded_now = {}, []
    for label, loras in sequence:
        result = run(manager, tiny, loras)
        images.setdefault(label, []).append(pixels(result))
        loaded_now.append(result.metadata["adapters_loaded_now"])
    assert manager.loads == 1  # one checkpoint load for six requests
    assert [len(x) for x in loaded_now] == [0, 1, 1, 0, 0, 0]  # each LoRA file loaded once, then cached
    for label, seen in images.items():
        assert all(np.array_equal(seen[0], other) for other in seen[1:]), label
    # Each set on a fresh pipeline (its own manager, nothing else ever loaded) gives the same pixels.
    for label, loras in [("a", set_a), ("b", set_b), ("none", [])]:
        fresh = PipelineManager(tiny["config"], device="cpu")
        assert np.array_equal(pixels(run(fresh, tiny, loras)), images[label][0]), label


def test_adapter_cache_is_bounded(tiny):
    manager = PipelineManager(tiny["config"], device="cpu", max_adapters=1)
    run(manager, tiny, [lora(tiny, "ink", 1.0)])
    run(manager, tiny, [lora(tiny, "neon", 1.0)])
    entry, _ = manager.get(tiny["ckpt"], tiny["sha"])
    listed = {name for names in entry.pipe.get_list_adapters().values() for name in names}
    assert len(entry.adapters) == 1 and listed == set(entry.adapters.values())
    fresh = PipelineManager(tiny["config"], device="cpu")
    assert np.array_equal(pixels(run(manager, tiny, [lora(tiny, "ink", 1.0)])),
                          pixels(run(fresh, tiny, [lora(tiny, "ink", 1.0)])))


def test_png_parameters_round_trip_and_sidecar(manager, tiny, tmp_path):
    result = run(manager, tiny, [lora(tiny, "ink", 0.8), lora(tiny, "neon", 0.5)], seed=1234,
                 prompt="a castle, <lora:stale:1>", scheduler="dpm++_2m_karras", model_name="tiny_ckpt", clip_skip=2)
    text = result.parameters_text
    lines = text.split("\n")
    assert lines[0] == "a castle, <lora:ink:0.8>, <lora:neon:0.5>"
    assert lines[1] == "Negative prompt: blurry"
    assert lines[2].startswith(f"Steps: {STEPS}, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 64x64, ")
    assert f"Model hash: {tiny['sha'][:10]}, Model: tiny_ckpt" in lines[2]
    assert f'Lora hashes: "ink: {tiny["shas"]["ink"][:10]}, neon: {tiny["shas"]["neon"][:10]}"' in lines[2]
    assert lines[2].endswith("Version: zoo")

    png = save_png(result, tmp_path / "out.png", sidecar={"checkpoint": {"model_id": 11, "version_id": 22},
                                                         "loras": [{"model_id": 33, "version_id": 44}]})
    read = read_png_parameters(png)
    assert read == text
    parsed = parse_parameters(read)
    assert parsed == result.parameters
    assert parsed.lora_tags() == [("ink", 0.8), ("neon", 0.5)]
    assert parsed.to_text() == text
    side = json.loads(png.with_suffix(".json").read_text())
    assert side["checkpoint"] == {"model_id": 11, "version_id": 22}
    assert side["parameters"] == text
    assert side["generation"]["seed"] == 1234 and side["generation"]["checkpoint"]["sha256"] == tiny["sha"]
    assert [x["weight"] for x in side["generation"]["loras"]] == [0.8, 0.5]
    assert set(side["generation"]["timings"]) >= {"load_s", "generate_s", "lora_load_s", "lora_set_s"}


def test_parses_a1111_text_written_elsewhere():
    text = (
        "masterpiece, 1girl, <lora:add_detail:0.6>, (smile:1.2)\n"
        "Negative prompt: lowres, bad hands\n"
        "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3735928559, "
        'Size: 512x768, Model hash: 6ce0161689, Model: dreamshaper_8, Denoising strength: 0.4, Clip skip: 2, '
        'Hires upscale: 2, Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "easynegative: c74b4e810b03", '
        "Version: v1.9.4"
    )
    p = parse_parameters(text)
    assert p.prompt == "masterpiece, 1girl, <lora:add_detail:0.6>, (smile:1.2)"
    assert p.negative_prompt == "lowres, bad hands"
    assert (p.steps, p.sampler, p.cfg_scale, p.seed, p.width, p.height) == (28, "DPM++ 2M", 6.5, 3735928559, 512, 768)
    assert p.model_hash == "6ce0161689" and p.model == "dreamshaper_8" and p.clip_skip == 2
    assert p.denoising_strength == 0.4 and p.version == "v1.9.4"
    assert p.lora_hashes == {"add_detail": "7c6bad76eb54"} and p.lora_tags() == [("add_detail", 0.6)]
    assert p.extra["Schedule type"] == "Karras" and p.ti_hashes == {"easynegative": "c74b4e810b03"}
    assert p.extra["Hires upscale"] == "2"
    no_negative = parse_parameters("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512")
    assert no_negative.prompt == "a cat" and no_negative.negative_prompt == ""


def test_parameters_text_quotes_awkward_values():
    p = GenerationParameters(prompt="über, café\nsecond line", negative_prompt="", steps=4, sampler="Euler",
                             cfg_scale=7.5, seed=1, width=64, height=64, model="name, with comma")
    assert parse_parameters(p.to_text()) == p


def test_strip_model_tags():
    assert strip_model_tags("a cat, <lora:ink:0.8>, on a mat <lyco:x:1>") == "a cat, on a mat"
    assert strip_model_tags("<lora:ink:0.8>") == ""


def test_rejects_bad_sizes(manager, tiny):
    with pytest.raises(ValueError):
        run(manager, tiny, width=60)


def test_clip_skip_counts_as_a1111(manager, tiny):
    none = pixels(run(manager, tiny))
    assert np.array_equal(pixels(run(manager, tiny, clip_skip=1)), none)  # 1 = the last layer = no skip
    skip2 = run(manager, tiny, clip_skip=2)
    assert not np.array_equal(pixels(skip2), none)
    assert np.array_equal(pixels(run(manager, tiny, clip_skip=2)), pixels(skip2))
    assert "Clip skip: 2" in skip2.parameters_text


def test_plain_prompts_encode_as_diffusers_does(manager, tiny):
    from serving.studio.prompt_syntax import encode_prompts

    entry, _ = manager.get(tiny["ckpt"], tiny["sha"])
    manager.set_loras(entry, [])
    ours = encode_prompts(entry.pipe, "a cat", "blurry", clip_skip=1)
    ref_pos, ref_neg = entry.pipe.encode_prompt("a cat", "cpu", 1, True, "blurry")
    assert torch.allclose(ours["prompt_embeds"], ref_pos, atol=1e-6)
    assert torch.allclose(ours["negative_prompt_embeds"], ref_neg, atol=1e-6)


def test_emphasis_weighs_the_embeddings(manager, tiny):
    from serving.studio.prompt_syntax import encode_prompts, final_layer_norm

    entry, _ = manager.get(tiny["ckpt"], tiny["sha"])
    manager.set_loras(entry, [])
    norm = final_layer_norm(entry.pipe.text_encoder)
    plain = encode_prompts(entry.pipe, "a cat on a mat", "")["prompt_embeds"]
    assert torch.equal(encode_prompts(entry.pipe, "a (cat:1.0) on a mat", "")["prompt_embeds"], plain)
    stressed = encode_prompts(entry.pipe, "a (cat:1.5) on a mat", "")["prompt_embeds"]
    assert torch.isfinite(stressed).all() and not torch.allclose(stressed, plain, atol=1e-4)
    original_bias = norm.bias.detach().clone()
    try:
        with torch.no_grad():  # a random encoder's layer norm has no bias, so its outputs average 0; CLIP's do not
            norm.bias.fill_(0.25)
        plain = encode_prompts(entry.pipe, "a cat on a mat", "")["prompt_embeds"]
        stressed = encode_prompts(entry.pipe, "a (cat:1.5) on a mat", "")["prompt_embeds"]
    finally:
        with torch.no_grad():
            norm.bias.copy_(original_bias)
    assert not torch.allclose(stressed, plain, atol=1e-4)
    assert torch.allclose(stressed[0, :77].mean(), plain[0, :77].mean(), rtol=1e-5)  # A1111 keeps each chunk's mean


def test_a_prompt_past_77_tokens_is_read_to_its_end(manager, tiny):
    from serving.studio.prompt_syntax import encode_prompts

    head = ", ".join(["a watercolor castle on a hill"] * 14)  # about 90 tokens
    entry, _ = manager.get(tiny["ckpt"], tiny["sha"])
    manager.set_loras(entry, [])
    embeds = encode_prompts(entry.pipe, head, "blurry")
    assert embeds["prompt_embeds"].shape[1] == embeds["negative_prompt_embeds"].shape[1] == 2 * 77
    red, blue = pixels(run(manager, tiny, prompt=head + ", red sky")), pixels(run(manager, tiny, prompt=head + ", blue sea"))
    assert not np.array_equal(red, blue)  # cut at 77 tokens, both would be the same image


def test_a_lora_that_does_not_fit_is_refused_and_leaves_the_pipeline_clean(manager, tiny, tmp_path):
    from safetensors.torch import save_file

    from serving.studio.model_files import GenerationError

    module = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    wrong_shape = tmp_path / "wrong_shape.safetensors"  # as an SD 1.5 LoRA is for another width
    save_file({f"{module}.lora_down.weight": torch.randn(4, 99), f"{module}.lora_up.weight": torch.randn(64, 4),
               f"{module}.alpha": torch.tensor(4.0)}, str(wrong_shape))
    nowhere = "lora_unet_down_blocks_9_attentions_0_transformer_blocks_0_attn1_to_q"
    no_match = tmp_path / "no_match.safetensors"  # no module of this model has these names
    save_file({f"{nowhere}.lora_down.weight": torch.randn(4, 64), f"{nowhere}.lora_up.weight": torch.randn(64, 4),
               f"{nowhere}.alpha": torch.tensor(4.0)}, str(no_match))
    ink = [lora(tiny, "ink", 1.0)]
    with_ink, without = pixels(run(manager, tiny, ink)), pixels(run(manager, tiny))
    for bad in (wrong_shape, no_match):
        with pytest.raises(GenerationError, match="could not be loaded"):
            run(manager, tiny, [*ink, LoraUse(bad.stem, bad, None, 1.0)])
        assert np.array_equal(pixels(run(manager, tiny, ink)), with_ink), bad.stem
        assert np.array_equal(pixels(run(manager, tiny)), without), bad.stem
    entry, _ = manager.get(tiny["ckpt"], tiny["sha"])
    assert not any("wrong_shape" in n or "no_match" in n for n in entry.adapter_names)


def test_img2img_and_inpaint_requests_reuse_the_warm_checkpoint(manager, tiny):
    from PIL import Image

    init = Image.new("RGB", (SIZE, SIZE), (200, 120, 40))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    loads = manager.loads
    edited = run(manager, tiny, [lora(tiny, "ink", 0.7)], init_image=init, strength=0.5)
    inpainted = run(manager, tiny, [lora(tiny, "ink", 0.7)], init_image=init, mask_image=mask, strength=0.9)
    assert edited.image.size == inpainted.image.size == (SIZE, SIZE)
    assert edited.metadata["kind"] == "img2img" and inpainted.metadata["kind"] == "inpaint"
    assert "Denoising strength: 0.5" in edited.parameters_text
    assert manager.loads == max(loads, 1) and inpainted.timings["load_s"] == 0.0
    with pytest.raises(ValueError):
        run(manager, tiny, mask_image=mask)


def write_embedding(path, vectors: int, width: int = 32, seed: int = 0):
    """A textual inversion as A1111 saves it in .safetensors: one `emb_params` tensor, a row per vector."""
    from safetensors.torch import save_file

    save_file({"emb_params": torch.randn(vectors, width, generator=torch.Generator().manual_seed(seed))}, str(path))
    return path


def test_a_textual_inversion_word_calls_its_vectors(manager, tiny, tmp_path):
    from serving.studio.generate import EmbeddingUse
    from serving.studio.prompt_syntax import chunk_prompt

    as_text = pixels(run(manager, tiny, negative_prompt="grubbly, blurry"))  # no embedding: plain words
    grubbly = EmbeddingUse("Grubbly", write_embedding(tmp_path / "Grubbly.safetensors", vectors=2))
    called = run(manager, tiny, negative_prompt="grubbly, blurry", embeddings=[grubbly])
    assert not np.array_equal(pixels(called), as_text)
    assert np.array_equal(pixels(run(manager, tiny, negative_prompt="GRUBBLY, blurry", embeddings=[grubbly])),
                          pixels(called))  # A1111 matches the name in any case
    again = run(manager, tiny, negative_prompt="grubbly, blurry")  # loaded: it answers to its name, and is listed
    assert np.array_equal(pixels(again), pixels(called)) and 'TI hashes: "Grubbly: ' in again.parameters_text
    assert "TI hashes" not in run(manager, tiny, negative_prompt="blurry", embeddings=[grubbly]).parameters_text
    entry, _ = manager.get(tiny["ckpt"], tiny["sha"])
    tokenizer = entry.pipe.tokenizer
    (chunk,) = chunk_prompt(tokenizer, "grubbly cat", lambda text: entry.pipe.maybe_convert_prompt(text, tokenizer))
    assert chunk.tokens[1:3] == tokenizer.convert_tokens_to_ids(["grubbly", "grubbly_1"])  # one token per vector
    assert 'TI hashes: "Grubbly: ' in called.parameters_text
    assert parse_parameters(called.parameters_text).ti_hashes == {"Grubbly": called.metadata["embeddings"][0]["autov2"]}


def test_textual_inversions_that_cannot_load_are_refused_cleanly(manager, tiny, tmp_path):
    from serving.studio.generate import EmbeddingUse
    from serving.studio.model_files import GenerationError

    before = pixels(run(manager, tiny, negative_prompt="blurry"))
    pickle = tmp_path / "old.pt"
    pickle.write_bytes(b"not read")
    wide = write_embedding(tmp_path / "wide.safetensors", vectors=1, width=48)  # an embedding of another model
    for bad, message in ((pickle, "only .safetensors"), (wide, "could not be loaded")):
        with pytest.raises(GenerationError, match=message):
            run(manager, tiny, negative_prompt="blurry", embeddings=[EmbeddingUse(bad.stem, bad)])
    assert np.array_equal(pixels(run(manager, tiny, negative_prompt="blurry")), before)


def test_an_embedding_loaded_on_one_checkpoint_leaves_the_others_alone(manager, tiny, tmp_path):
    """Each warm pipeline has its own tokenizer: an embedding's word added on one is plain text on another."""
    from serving.studio.generate import EmbeddingUse

    other_pipe = tiny_sd.build_random_pipeline(tiny["config"], seed=11)
    other = tiny_sd.save_single_file(other_pipe, tmp_path / "other-ckpt.safetensors")

    def on_other(**kw):
        return pixels(generate(manager, checkpoint_path=other, prompt="a castle", negative_prompt="smudgy",
                               steps=STEPS, seed=7, width=SIZE, height=SIZE, scheduler="euler", **kw))

    plain = on_other()
    smudgy = EmbeddingUse("smudgy", write_embedding(tmp_path / "smudgy.safetensors", vectors=3, seed=4))
    run(manager, tiny, negative_prompt="smudgy", embeddings=[smudgy])  # loaded on the first checkpoint only
    assert np.array_equal(on_other(), plain)
    assert not np.array_equal(on_other(embeddings=[smudgy]), plain)  # and loadable on the second too
