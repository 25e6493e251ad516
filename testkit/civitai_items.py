"""Generated Civitai /models items of either schema era (see /work/shared/civitai/API.md), for tests and benchmarks
that need more items than the hand-written fixtures hold.

Ids are derived from the model id, so items made from distinct model ids never share a version, file or image id:
version `model_id * 10 + i`, file `model_id * 10 + i` (another table), image `model_id * 100 + 10 * i + j`.
"""

from __future__ import annotations

import random
import string

BASE_MODELS = ("SD 1.5", "SDXL 1.0", "Pony", "Flux.1 D", "Illustrious")
TYPES = ("LORA", "Checkpoint", "TextualInversion", "LoCon")


def incompressible_text(length: int, seed: int = 0) -> str:
    """Random letters and digits: pglz cannot shrink them, so a long one overflows a btree index row (2,704 bytes)."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(length))


def civitai_item(model_id: int, *, era: str = "2024", versions: int = 1, images: int = 2, seed: int | None = None,
                 model_type: str | None = None, base_model: str | None = None, nsfw: bool = False) -> dict:
    """One /models item with `versions` versions (each one primary file and `images` example images)."""
    rng = random.Random(model_id if seed is None else seed)
    model_type = model_type or rng.choice(TYPES)
    item: dict = {
        "id": model_id,
        "name": f"Generated model {model_id}",
        "description": f"<p>A generated {model_type} number <b>{model_id}</b>.</p>",
        "type": model_type,
        "poi": False,
        "nsfw": nsfw,
        "allowNoCredit": True,
        "allowDerivatives": True,
        "allowDifferentLicense": True,
        "stats": {"downloadCount": rng.randrange(10_000), "favoriteCount": 0, "thumbsUpCount": rng.randrange(500),
                  "commentCount": rng.randrange(50), "ratingCount": 0, "rating": 0},
        "creator": {"username": f"maker{model_id % 97}", "image": None},
        "tags": ["generated", rng.choice(("style", "character", "concept"))],
        "modelVersions": [_version(model_id, model_id * 10 + i, i, era, images, rng, base_model)
                          for i in range(versions)],
    }
    if era == "2024":
        item.update({"nsfwLevel": 31 if nsfw else 1, "minor": False, "sfwOnly": False, "availability": "Public",
                     "allowCommercialUse": ["Image", "RentCivit"], "supportsGeneration": True})
    else:
        item["allowCommercialUse"] = "Sell"
    return item


def _version(model_id: int, version_id: int, index: int, era: str, images: int, rng: random.Random,
             base_model: str | None) -> dict:
    base = base_model or rng.choice(BASE_MODELS)
    sha256 = f"{rng.getrandbits(256):064X}"
    version = {
        "id": version_id,
        "index": index,
        "name": f"v{index + 1}.0",
        "baseModel": base,
        "baseModelType": "Standard",
        "createdAt": "2024-05-03T09:14:22.512Z",
        "publishedAt": "2024-05-03T09:40:01.118Z",
        "status": "Published",
        "description": None,
        "trainedWords": [f"gen{model_id}"],
        "stats": {"downloadCount": rng.randrange(10_000), "ratingCount": 0, "rating": 0, "thumbsUpCount": 3},
        "files": [{
            "id": version_id, "sizeKB": 18829.3, "name": f"gen_{model_id}_v{index + 1}.safetensors", "type": "Model",
            "pickleScanResult": "Success", "virusScanResult": "Success", "primary": True,
            "metadata": {"format": "SafeTensor", "size": "full", "fp": "fp16"},
            "hashes": {"AutoV2": sha256[:10], "SHA256": sha256, "CRC32": sha256[-8:]},
            "downloadUrl": f"https://civitai.com/api/download/models/{version_id}",
        }],
        "images": [_image(model_id * 100 + 10 * index + j, era, rng, base) for j in range(images)],
        "downloadUrl": f"https://civitai.com/api/download/models/{version_id}",
    }
    if era == "2024":
        version["nsfwLevel"] = 1
    return version


def _image(image_id: int, era: str, rng: random.Random, base_model: str) -> dict:
    url = f"https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/{image_id:x}/width=450/{image_id}.jpeg"
    if era == "2024":
        return {"url": url, "nsfwLevel": 1, "width": 832, "height": 1216, "hash": "U8Fi", "type": "image",
                "hasMeta": True}
    return {"id": image_id, "url": url, "nsfw": "None", "width": 512, "height": 768, "hash": "U8Fi",
            "meta": {"prompt": f"a {rng.choice(('red', 'blue'))} lighthouse, {base_model}", "steps": 20,
                     "sampler": "Euler a", "cfgScale": 7, "seed": rng.randrange(2**32)}}
