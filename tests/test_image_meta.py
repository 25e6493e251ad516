"""crawlers.image_meta on hand-made metas shaped like the ones Civitai returns (A1111, on-site generator, AddNet)."""

from __future__ import annotations

import math
import random
import time

import pytest

from crawlers.image_meta import ResourceReference, extract_references, prompt_lora_weights


def ref(role, sources, name=None, hash=None, version_id=None, weight=None) -> ResourceReference:
    return ResourceReference(role, tuple(sources), name, hash, version_id, weight)


def a1111_meta() -> dict:
    """An A1111 image as Civitai stores it: its own `resources` parse next to the raw `Hashes` and prompt."""
    return {
        "prompt": "a quiet harbour at dawn, <lora:inkWash_v2:0.6>, soft light",
        "negativePrompt": "blurry",
        "Model": "dreamMix_v3",
        "Model hash": "ab12cd34ef",
        "hashes": {"model": "ab12cd34ef", "vae": "99aa88bb77", "lora:inkWash_v2": "0a1b2c3d4e"},
        "resources": [
            {"type": "lora", "name": "inkWash_v2", "weight": 0.6},
            {"type": "model", "name": "dreamMix_v3", "hash": "ab12cd34ef"},
        ],
        "steps": 30,
    }


def test_a1111_lora_from_resources_hashes_and_prompt_tag_is_one_reference():
    assert extract_references(a1111_meta()) == [
        ref("checkpoint", ["hashes", "model_hash", "resources"], "dreamMix_v3", "AB12CD34EF"),
        ref("lora", ["hashes", "prompt_tag", "resources"], "inkWash_v2", "0A1B2C3D4E", weight=0.6),
        ref("vae", ["hashes"], hash="99AA88BB77"),
    ]


def test_checkpoint_from_model_hash_model_and_hashes_model_is_one_reference():
    meta = {"Model": " dreamMix_v3 ", "Model hash": "ab12cd34ef", "hashes": {"model": "AB12CD34EF"}}
    assert extract_references(meta) == [ref("checkpoint", ["hashes", "model_hash"], "dreamMix_v3", "AB12CD34EF")]


def test_checkpoint_name_matches_without_folder_extension_or_case():
    meta = {
        "Model": "sdxl\\DreamMix_V3.safetensors",
        "resources": [{"type": "model", "name": "dreammix_v3"}],
        "hashes": {"model": "c3688ee04c"},
        "Model hash": "c3688ee04c",
    }
    # resources outranks the raw A1111 field, so its spelling of the name is kept.
    assert extract_references(meta) == [
        ref("checkpoint", ["hashes", "model_hash", "resources"], "dreammix_v3", "C3688EE04C")
    ]


def test_checkpoint_name_with_a_dot_is_not_taken_for_an_extension():
    meta = {"Model": "paperCut_1.5", "resources": [{"type": "model", "name": "paperCut_1"}]}
    assert [r.name for r in extract_references(meta)] == ["paperCut_1", "paperCut_1.5"]


def test_comfy_meta_with_empty_hashes_keeps_the_named_checkpoint_only():
    meta = {"Model": "flux_dev_fp8", "Model hash": "", "hashes": {"model": ""}, "resources": []}
    assert extract_references(meta) == [ref("checkpoint", ["model_hash"], "flux_dev_fp8")]


def test_civitai_resources_give_version_ids_and_weights():
    meta = {
        "civitaiResources": [
            {"type": "checkpoint", "modelVersionId": 691639, "modelVersionName": "Dev"},
            {"type": "lora", "weight": 0.4, "modelVersionId": 1202162, "modelVersionName": "V1"},
            # Another version of the same model, also called 'V1': a different resource.
            {"type": "LoRA", "weight": "0.8", "modelVersionId": "1470588", "modelVersionName": "V1"},
            {"type": "embed", "modelVersionId": 5001},
            {"type": "textualinversion", "modelVersionId": 5002, "weight": 1},
            {"type": "dora", "modelVersionId": 5003, "weight": 0.5},
            {"type": "lora", "modelVersionId": 1202162, "weight": 0.9},  # repeated entry: first one wins
            {"type": "controlnet", "modelVersionId": 5004},
            {"type": "lora"},
        ]
    }
    assert extract_references(meta) == [
        ref("checkpoint", ["civitaiResources"], version_id=691639),
        ref("embedding", ["civitaiResources"], version_id=5001),
        ref("embedding", ["civitaiResources"], version_id=5002, weight=1.0),
        ref("lora", ["civitaiResources"], version_id=5003, weight=0.5),
        ref("lora", ["civitaiResources"], version_id=1202162, weight=0.4),
        ref("lora", ["civitaiResources"], version_id=1470588, weight=0.8),
    ]


def test_air_urn_gives_version_id_and_role():
    meta = {
        "civitaiResources": [
            {"air": "urn:air:sd1:lora:civitai:123@456", "weight": 0.7},
            {"air": "urn:air:sdxl:checkpoint:civitai:4201@130072.safetensors"},
            {"air": " urn:air:flux1:embedding:civitai:77@88 "},
            {"type": "lora", "modelVersionId": 999, "air": "urn:air:sd1:lora:civitai:1@2"},  # explicit id wins
            {"type": "lycoris", "air": "urn:air:sd1:lora:civitai:5@6"},  # explicit type wins
            {"air": "urn:air:sd1:lora:civitai:123"},  # no version
            {"air": "urn:air:sd1:controlnet:civitai:9@10"},  # unknown role
            {"air": 12345},
        ]
    }
    assert extract_references(meta) == [
        ref("checkpoint", ["civitaiResources"], version_id=130072),
        ref("embedding", ["civitaiResources"], version_id=88),
        ref("lora", ["civitaiResources"], version_id=6),
        ref("lora", ["civitaiResources"], version_id=456, weight=0.7),
        ref("lora", ["civitaiResources"], version_id=999),
    ]


def test_hashes_keys_of_every_kind():
    meta = {
        "hashes": {
            "model": "8ae0583b06",
            "vae": "afc8e28272",
            "lora:Kaoru Yamada": "d4893f7202",
            "lyco:locon_anya_v1": "1234567890",
            "embed:easynegative": "c74b4e810b",
            "hypernet:heejin_V016": "abcdefabcd",
            "controlnet:canny": "1111111111",
        }
    }
    assert extract_references(meta) == [
        ref("checkpoint", ["hashes"], hash="8AE0583B06"),
        ref("embedding", ["hashes"], "easynegative", "C74B4E810B"),
        ref("hypernetwork", ["hashes"], "heejin_V016", "ABCDEFABCD"),
        ref("lora", ["hashes"], "Kaoru Yamada", "D4893F7202"),
        ref("lora", ["hashes"], "locon_anya_v1", "1234567890"),
        ref("vae", ["hashes"], hash="AFC8E28272"),
    ]


def test_comfy_style_hash_key_with_folder_merges_with_the_prompt_tag():
    meta = {
        "prompt": "charcoal study ,<lora:flux/fav/charcoalLines-000014.safetensors:1.0:1.0>",
        "hashes": {"LORA:flux/fav/charcoalLines-000014.safetensors": "34d36c17c1", "model": "4610115bb0"},
        "resources": [{"type": "lora", "name": "CharcoalLines-000014", "weight": 0.9}],
    }
    assert extract_references(meta)[1:] == [
        ref("lora", ["hashes", "prompt_tag", "resources"], "CharcoalLines-000014", "34D36C17C1", weight=0.9),
    ]


def test_resources_of_every_type():
    meta = {
        "resources": [
            {"type": "model", "name": "GuoFeng3.2", "hash": "0bb33c7041"},
            {"type": "lora", "name": "shu", "weight": 1},
            {"type": "lycoris", "name": "cobie", "weight": 0.9},
            {"type": "locon", "name": "anya", "hash": "", "weight": None},
            {"type": "hypernet", "name": "heejin_V016", "weight": 0.8},
            {"type": "embedding", "name": "badhandv4"},
            {"type": "upscaler", "name": "4x-UltraSharp"},
            {"type": "lora", "name": None, "weight": 0.5},
        ]
    }
    assert extract_references(meta) == [
        ref("checkpoint", ["resources"], "GuoFeng3.2", "0BB33C7041"),
        ref("embedding", ["resources"], "badhandv4"),
        ref("hypernetwork", ["resources"], "heejin_V016", weight=0.8),
        ref("lora", ["resources"], "anya"),
        ref("lora", ["resources"], "cobie", weight=0.9),
        ref("lora", ["resources"], "shu", weight=1.0),
    ]


def test_addnet_fields():
    meta = {
        "AddNet Enabled": "True",
        "AddNet Module 1": "LoRA",
        "AddNet Model 1": "softLight_v2(3775aad8a02d)",
        "AddNet Weight A 1": "0.65",
        "AddNet Weight B 1": "0.65",
        "AddNet Model 2": "Chinese fashion girl-2.0(ad64d7449fc1)",
        "AddNet Weight A 2": 0.3,
        "AddNet Model 3": "noHashLora",
        "AddNet Weight 3": "1",  # older extension versions wrote a single weight
        "AddNet Model 4": "paren(notahash)",
        "AddNet Model 6": "beyondFive(1234567890ab)",
        # Civitai's resources parse of the same AddNet model, without the weight.
        "resources": [{"type": "lora", "name": "softLight_v2", "hash": "3775aad8a02d", "weight": None}],
        "prompt": "city at night <lora:softLight_v2:0.2>",
    }
    assert extract_references(meta) == [
        ref("lora", ["addnet"], "Chinese fashion girl-2.0", "AD64D7449FC1", weight=0.3),
        ref("lora", ["addnet"], "noHashLora", weight=1.0),
        ref("lora", ["addnet"], "paren(notahash)"),
        ref("lora", ["addnet", "prompt_tag", "resources"], "softLight_v2", "3775AAD8A02D", weight=0.65),
    ]


def test_prompt_tags_in_extract_references():
    meta = {
        "prompt": (
            "<lora:墨心 v1.5:0.75> <lyco:Some-Thing.v2:.4>, <LoRA:noWeight>, <lora:twice:0.3> "
            "<lora:flat2:-1:MIDS> <hypernet:heejin_V016:0.8> <lora:twice:0.9> <lora::0.5> <lora:odd:abc>"
        )
    }
    assert extract_references(meta) == [
        ref("hypernetwork", ["prompt_tag"], "heejin_V016", weight=0.8),
        ref("lora", ["prompt_tag"], "flat2", weight=-1.0),
        ref("lora", ["prompt_tag"], "noWeight"),
        ref("lora", ["prompt_tag"], "odd"),
        ref("lora", ["prompt_tag"], "Some-Thing.v2", weight=0.4),
        ref("lora", ["prompt_tag"], "twice", weight=0.9),
        ref("lora", ["prompt_tag"], "墨心 v1.5", weight=0.75),
    ]


def test_weight_priority_between_sources():
    meta = {
        "resources": [{"type": "lora", "name": "mist", "weight": 0.8}],
        "AddNet Model 1": "mist(aaaaaaaaaaaa)",
        "AddNet Weight A 1": "0.7",
        "prompt": "<lora:mist:0.5>",
    }
    assert extract_references(meta) == [
        ref("lora", ["addnet", "prompt_tag", "resources"], "mist", "AAAAAAAAAAAA", weight=0.8)
    ]


def test_same_hash_merges_different_names():
    meta = {
        "resources": [{"type": "lora", "name": "detailTweaker", "hash": "7c6bad76eb54", "weight": 0.5}],
        "AddNet Model 1": "add_detail(7C6BAD76EB54)",
    }
    assert extract_references(meta) == [
        ref("lora", ["addnet", "resources"], "detailTweaker", "7C6BAD76EB54", weight=0.5)
    ]


def test_a_mention_with_name_and_hash_joins_the_name_group_and_the_hash_group():
    meta = {
        "resources": [
            {"type": "lora", "name": "mist"},  # known by name only
            {"type": "lora", "hash": "abcdef123456", "weight": 0.5},  # known by hash only
        ],
        "AddNet Model 1": "MIST(abcdef123456)",  # links the two
    }
    assert extract_references(meta) == [ref("lora", ["addnet", "resources"], "mist", "ABCDEF123456", weight=0.5)]


def test_same_name_in_different_roles_stays_apart():
    meta = {"hashes": {"embed:style": "1111111111", "lora:style": "2222222222"}}
    assert [(r.role, r.hash) for r in extract_references(meta)] == [("embedding", "1111111111"), ("lora", "2222222222")]


def test_unusable_hashes_become_none():
    meta = {
        "hashes": {
            "model": "",
            "lora:emptyFile": "e3b0c44298fc",
            "lora:emptyAutoV2": "E3B0C44298",
            "lora:notHex": "xyz!",
            "lora:number": 123,
            "lora:padded": "  0a1b2c3d4e\n",
            "vae": None,
        },
        "Model hash": 12345678,
    }
    assert extract_references(meta) == [
        ref("lora", ["hashes"], "emptyAutoV2"),
        ref("lora", ["hashes"], "emptyFile"),
        ref("lora", ["hashes"], "notHex"),
        ref("lora", ["hashes"], "number"),
        ref("lora", ["hashes"], "padded", "0A1B2C3D4E"),
    ]


@pytest.mark.parametrize("meta", [None, [], "Steps: 20", 5, {}, {"prompt": None}, {"resources": {"type": "lora"}}])
def test_non_meta_gives_nothing(meta):
    assert extract_references(meta) == []


def test_wrong_value_types_are_skipped_field_by_field():
    meta = {
        "civitaiResources": [
            {"type": "lora", "modelVersionId": True, "weight": 0.5},  # bool is not an id
            {"type": "lora", "modelVersionId": 3.0},
            {"type": "lora", "modelVersionId": -4},
            {"type": "lora", "modelVersionId": "9" * 40},
            {"type": "lora", "modelVersionId": 42, "weight": "abc"},
            "garbage",
        ],
        "resources": [
            {"type": "lora", "name": "nanWeight", "weight": float("nan")},
            {"type": "lora", "name": "infWeight", "weight": "inf"},
            {"type": "lora", "name": "hugeWeight", "weight": 10**400},
            {"type": "lora", "name": "boolWeight", "weight": True},
            {"type": ["lora"], "name": "badType"},
            {"type": "lora", "name": {"x": 1}, "hash": "1234567890"},
            None,
        ],
        "hashes": ["lora:x", "1234567890"],
        "Model": 7,
        "AddNet Model 1": ["x"],
        "prompt": ["<lora:x:1>"],
    }
    assert extract_references(meta) == [
        ref("lora", ["resources"], "boolWeight"),
        ref("lora", ["resources"], "hugeWeight"),
        ref("lora", ["resources"], "infWeight"),
        ref("lora", ["resources"], "nanWeight"),
        ref("lora", ["resources"], hash="1234567890"),
        ref("lora", ["civitaiResources"], version_id=42),
    ]


def test_prompt_lora_weights():
    prompt = (
        "<lora:a:0.7>, <lora:b:.5> <lyco:c:1> <lora:a:0.2:0.9> <lora:noWeight> <hypernet:h:0.8> "
        "<lora: spaced name :1.25> <lora:bad:NF> <lora:LowRA:0:7> <lora:unterminated:0.4"
    )
    assert prompt_lora_weights(prompt) == {"a": 0.2, "b": 0.5, "c": 1.0, "spaced name": 1.25, "LowRA": 0.0}
    assert prompt_lora_weights(None) == {}
    assert prompt_lora_weights({"prompt": "<lora:a:1>"}) == {}


def test_prompt_tags_on_a_hostile_prompt_stay_fast():
    prompt = "<lora:" * 50_000 + "<lora:last:0.5>"
    start = time.perf_counter()
    assert prompt_lora_weights(prompt) == {"last": 0.5}
    assert time.perf_counter() - start < 10  # linear, not quadratic: a hang guard, not a speed test


_META_KEYS = [
    "civitaiResources", "resources", "hashes", "Model", "Model hash", "prompt", "AddNet Model 1", "AddNet Weight A 1",
    "AddNet Weight 1",
]
_ITEM_KEYS = ["type", "name", "hash", "weight", "modelVersionId", "air"]
_HASH_KEYS = ["model", "vae", "lora:x", "embed:y", "LYCO:z/w.safetensors", "lora:", ":", ""]
_STRINGS = [
    "", " ", "lora", "model", "checkpoint", "embed", "hypernet", "vae", "0.7", ".7", "-1", "abc", "nan", "inf",
    "1e400", "ab12cd34ef", "E3B0C44298FC", "<lora:x:0.7>", "<lora:", "<lyco:y>", "<lora::>", "x(12ab)", "(",
    "urn:air:sd1:lora:civitai:1@2", "urn:air:::@", "9" * 30, "墨心", "\x00", "a/b\\c.safetensors",
]
_SCALARS = [None, True, False, 0, -1, 1, 10**400, 0.5, float("nan"), float("inf"), -float("inf")]


def _garbage(rng: random.Random, depth: int = 0) -> object:
    """Random nesting of dicts, lists, strings, numbers and None, as a careless producer could give."""
    kind = rng.randrange(6 if depth < 4 else 3)
    if kind == 0:
        return rng.choice(_SCALARS)
    if kind == 1:
        return rng.choice(_STRINGS)
    if kind == 2:
        return "".join(rng.choice(_STRINGS) for _ in range(rng.randrange(6)))
    if kind == 3:
        return [_garbage(rng, depth + 1) for _ in range(rng.randrange(5))]
    keys = rng.choice([_META_KEYS, _ITEM_KEYS, _HASH_KEYS, [1, None, (1, 2), "x"]])
    return {rng.choice(keys): _garbage(rng, depth + 1) for _ in range(rng.randrange(8))}


def _garbage_meta(rng: random.Random) -> dict:
    """A meta whose fields have roughly the right shape but garbage inside, so the garbage reaches every parser."""

    def value() -> object:
        kind = rng.randrange(5)
        if kind == 0:
            return _garbage(rng, 2)
        if kind == 1:
            return rng.choice(_SCALARS)
        if kind == 2:
            return " ".join(rng.choice(_STRINGS) for _ in range(rng.randrange(1, 6)))
        return rng.choice(_STRINGS)

    def item() -> object:
        if rng.random() < 0.1:
            return value()
        return {"type": rng.choice(["lora", "model", "checkpoint", "embed", "LyCORIS", "vae"])} | {
            rng.choice(_ITEM_KEYS): value() for _ in range(rng.randrange(7))
        }

    meta: dict = {key: value() for key in rng.sample(_META_KEYS, rng.randrange(len(_META_KEYS)))}
    for key in ("civitaiResources", "resources"):
        if rng.random() < 0.5:
            meta[key] = [item() for _ in range(rng.randrange(5))]
    if rng.random() < 0.5:
        meta["hashes"] = {rng.choice(_HASH_KEYS): value() for _ in range(rng.randrange(5))}
    return meta


def test_random_garbage_never_raises():
    rng = random.Random(20230704)
    for n in range(600):
        meta = _garbage(rng) if n % 2 else _garbage_meta(rng)
        references = extract_references(meta)
        assert all(isinstance(r, ResourceReference) for r in references)
        assert all(r.weight is None or math.isfinite(r.weight) for r in references)
        prompt_lora_weights(meta)
        if isinstance(meta, dict):
            prompt_lora_weights(meta.get("prompt"))
