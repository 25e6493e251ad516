"""crawlers.normalise on the fixture files: both schema eras become the same kind of rows.

Every expectation is a fact stated in tests/fixtures/README.md (types, versions newest first, base models, files
and hashes, primary flags, image NSFW levels, special cases, malformed lines, the hostile description).
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from crawlers.normalise import NormaliseError, NormalisedModel, commercial_use, image_id_of, normalise_model
from crawlers.taxonomy import base_model_family

try:
    from tests.helpers import FIXTURES, read_jsonl
except ImportError:  # tests/ not importable as a package: pytest put tests/ itself on sys.path
    from helpers import FIXTURES, read_jsonl

ITEMS_2023 = {item["id"]: item for item in read_jsonl("civitai_2023.jsonl")}
ITEMS_2024 = {item["id"]: item for item in read_jsonl("civitai_2024.jsonl")}
ALL_ITEMS = {**ITEMS_2023, **ITEMS_2024}

# model id: (type, era, [(version id, base model)] newest first, files, images, NSFW images) -- README model tables
MODELS = {
    100101: ("Checkpoint", "2023", [(200102, "SD 1.5"), (200101, "SD 1.5")], 3, 5, 1),
    100102: ("Checkpoint", "2023", [(200103, "SD 1.5")], 1, 3, 0),
    100103: ("Checkpoint", "2023", [(200104, "SDXL 1.0")], 1, 2, 0),
    100201: ("LORA", "2023", [(200201, "SD 1.5")], 1, 4, 0),
    100202: ("LORA", "2023", [(200202, "SD 1.5")], 1, 4, 1),
    100203: ("LORA", "2023", [(200203, "SD 1.5")], 1, 4, 3),
    100204: ("LORA", "2023", [(200204, "SDXL 1.0")], 1, 3, 0),
    100301: ("TextualInversion", "2023", [(200301, "SD 1.5")], 1, 2, 0),
    100401: ("Hypernetwork", "2023", [(200401, "SD 1.5")], 1, 2, 0),
    500101: ("LORA", "2024+", [(600101, "Pony")], 1, 3, 0),
    500102: ("Checkpoint", "2024+", [(600102, "Illustrious"), (600103, "Illustrious")], 3, 8, 4),
    500103: ("LORA", "2024+", [(600104, "Flux.1 D")], 1, 2, 0),
    500104: ("LoCon", "2024+", [(600105, "SDXL 1.0")], 1, 2, 0),
    500105: ("DoRA", "2024+", [(600106, "Illustrious")], 1, 1, 0),
    500106: ("LORA", "2024+", [(600107, "SD 1.5")], 1, 3, 1),
    500107: ("Checkpoint", "2024+", [(600108, "SD 1.5"), (600109, "SD 1.5")], 0, 2, 0),
}
FAMILY = {"SD 1.5": "SD1.x", "SDXL 1.0": "SDXL", "Pony": "SDXL", "Illustrious": "SDXL", "Flux.1 D": "Flux.1"}

# model id: (NSFW expected, reason kind) -- README "NSFW expected" / "reason" columns
NSFW = {
    100101: (False, "sfw"), 100102: (False, "sfw"), 100103: (False, "sfw"), 100201: (False, "sfw"),
    100202: (True, "flag"), 100203: (True, "images"), 100204: (False, "sfw"), 100301: (False, "sfw"),
    100401: (False, "sfw"),
    500101: (False, "sfw"), 500102: (True, "flag"), 500103: (False, "sfw"), 500104: (False, "sfw"),
    500105: (False, "sfw"), 500106: (True, "level"), 500107: (False, "sfw"),
}

# (version id, file id, file name, primary, AutoV2, AutoV3) -- README "Files and hashes" tables
FILES = [
    (200102, 300102, "meadowlightRealism_v20.safetensors", True, "58B33C1D7A", None),
    (200102, 300103, "meadowlightRealism_v20_fp32.safetensors", False, "8251A9FE5E", None),
    (200101, 300101, "meadowlightRealism_v10.safetensors", True, "5DEEE83EC0", None),
    (200103, 300104, "inkpotAnimeMix_v1.safetensors", True, "15F5AE8859", None),
    (200104, 300105, "harborlineXL_v10.safetensors", True, "D2E03D857C", None),
    (200201, 300201, "suisaiDream_v10.safetensors", True, "C352851B79", None),
    (200202, 300202, "velvetHour_v1.safetensors", True, "BF3C475FD8", None),
    (200203, 300203, "midnightPinup_v2.safetensors", True, "B6E6D34E7C", None),
    (200204, 300204, "brassClockworkXL_v1.safetensors", True, "F1ABE00A6E", None),
    (200301, 300301, "tidyHandsNeg.safetensors", True, "07C5505A7A", None),
    (200401, 300401, "softGrainFilm.pt", True, "FC5AE7D65A", None),
    (600101, 700101, "sunlitKitchen_pony_v1.safetensors", True, "5691CEA667", "F20A8A7B0B18"),
    (600102, 700102, "lacquerbloomIL_v20.safetensors", True, "0BDB6F70C7", "EF5F364E812D"),
    (600102, 700103, "lacquerbloomIL_v20_fp32.safetensors", False, "C4B80E57DB", "A4AD7508EB99"),
    (600103, 700104, "lacquerbloomIL_v10.safetensors", True, "203BA28BFE", "5B5CDC9ADCBF"),
    (600104, 700105, "paperfoldDiorama_flux_rank16_bf16.safetensors", True, "DF361EB9E0", "F1817A051136"),
    (600105, 700106, "knitwearTexture_locon_v1.safetensors", True, "05ECF8FC7B", "4E33927A36F1"),
    (600106, 700107, "glassEyeDetail_dora_v1.safetensors", True, "E0DAF953FE", "978DED7816D2"),
    (600107, 700108, "retroPinupPoster_v1.safetensors", True, "EC1AA51DF0", "CFF058C25FD9"),
]

# 2023 image id: legacy nsfw string -- README "Per-image reference mechanisms" table
LEGACY_IMAGE_NSFW = {
    400101: "None", 400102: "Soft", 400103: "None", 400104: "Mature", 400105: "None", 400106: "None",
    400107: "Soft", 400108: "None", 400109: "None", 400201: "None", 400202: "None", 400203: "Soft",
    400204: "None", 400205: "X", 400206: "None", 400207: "Soft", 400208: "None", 400209: "Mature",
    400210: "X", 400211: "Mature", 400212: "None", 400213: "None", 400214: "None", 400215: "Soft",
    400216: "None", 400217: "None", 400218: "None", 400219: "None",
}
LEGACY_LEVEL = {"None": 1, "Soft": 2, "Mature": 4, "X": 8}


def _normalised(model_id: int) -> NormalisedModel:
    return normalise_model(copy.deepcopy(ALL_ITEMS[model_id]))


def _raw_images(item: dict) -> list[tuple[int, dict]]:
    return [(version["id"], image) for version in item["modelVersions"] for image in version.get("images") or []]


# ---------------------------------------------------------------------------------------------------------------
# models and versions
# ---------------------------------------------------------------------------------------------------------------


def test_fixture_files_hold_the_documented_models():
    assert sorted(ITEMS_2023) == [m for m in sorted(MODELS) if m < 500000]
    assert sorted(ITEMS_2024) == [m for m in sorted(MODELS) if m >= 500000]


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_model_type_era_and_versions(model_id):
    model_type, era, versions, n_files, n_images, n_nsfw_images = MODELS[model_id]
    rows = _normalised(model_id)
    assert rows.model["id"] == model_id
    assert rows.model["name"] == ALL_ITEMS[model_id]["name"]
    assert rows.model["type"] == model_type
    assert rows.model["schema_era"] == era
    assert [(v["id"], v["base_model"]) for v in rows.versions] == versions
    assert [v["position"] for v in rows.versions] == list(range(len(versions)))
    assert all(v["model_id"] == model_id for v in rows.versions)
    assert [v["base_model_family"] for v in rows.versions] == [FAMILY[base] for _, base in versions]
    assert len(rows.files) == n_files
    assert len(rows.images) == n_images
    assert sum(1 for image in rows.images if image["nsfw"]) == n_nsfw_images


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_model_nsfw_decision_matches_the_readme(model_id):
    expected, reason = NSFW[model_id]
    rows = _normalised(model_id)
    assert rows.model["nsfw"] is expected
    assert rows.model["nsfw_reason"].startswith(reason)
    assert rows.model["nsfw_flag"] is (ALL_ITEMS[model_id]["nsfw"] is True)
    assert rows.model["nsfw_level"] == ALL_ITEMS[model_id].get("nsfwLevel")


def test_2024_model_and_version_bitmasks_are_kept():
    rows = _normalised(500102)
    assert rows.model["nsfw_level"] == 31
    item_levels = {v["id"]: v["nsfwLevel"] for v in ITEMS_2024[500102]["modelVersions"]}
    assert {v["id"]: v["nsfw_level"] for v in rows.versions} == item_levels
    assert all(v["nsfw_level"] is None for v in _normalised(100101).versions)
    assert _normalised(100101).model["nsfw_level"] is None


@pytest.mark.parametrize(
    ("base_model", "family"),
    [
        ("SD 1.5", "SD1.x"), ("SD 1.4", "SD1.x"), ("SD 2.1", "SD2.x"), ("SDXL 1.0", "SDXL"),
        ("SDXL Turbo", "SDXL"), ("Pony", "SDXL"), ("Illustrious", "SDXL"), ("NoobAI", "SDXL"),
        ("Flux.1 D", "Flux.1"), ("Flux.1 S", "Flux.1"), ("SD 3.5", "SD3"), ("Pony V7", "AuraFlow"),
        ("  Illustrious  ", "SDXL"), (None, "unknown"), ("", "unknown"), ("Wan Video", "Wan Video"),
    ],
)
def test_base_model_family(base_model, family):
    assert base_model_family(base_model) == family


def test_2024_version_position_follows_index_and_2023_the_list_order():
    item = copy.deepcopy(ITEMS_2024[500102])
    item["modelVersions"][0]["index"], item["modelVersions"][1]["index"] = 1, 0
    assert [(v["id"], v["position"]) for v in normalise_model(item).versions] == [(600102, 1), (600103, 0)]
    assert [(v["id"], v["position"]) for v in _normalised(100101).versions] == [(200102, 0), (200101, 1)]


# ---------------------------------------------------------------------------------------------------------------
# files and hashes
# ---------------------------------------------------------------------------------------------------------------


def _raw_files() -> dict[int, dict]:
    return {f["id"]: f for item in ALL_ITEMS.values() for v in item["modelVersions"] for f in v.get("files") or []}


@pytest.mark.parametrize("file", FILES, ids=[str(f[1]) for f in FILES])
def test_file_rows_version_name_primary_and_hashes(file):
    version_id, file_id, name, primary, autov2, autov3 = file
    model_id = next(m for m, spec in MODELS.items() if version_id in [v for v, _ in spec[2]])
    row = next(f for f in _normalised(model_id).files if f["id"] == file_id)
    raw = _raw_files()[file_id]["hashes"]
    assert row["version_id"] == version_id
    assert row["name"] == name
    assert row["name_stem"] == name.rsplit(".", 1)[0].lower()
    assert row["is_primary"] is primary
    assert row["autov2"] == autov2
    assert row["autov3"] == autov3
    assert row["sha256"] == raw["SHA256"].upper() and len(row["sha256"]) == 64
    assert row["autov2"] == row["sha256"][:10]
    assert row["autov1"] == raw["AutoV1"].upper()
    assert row["crc32"] == raw["CRC32"].upper()
    assert row["blake3"] == raw["BLAKE3"].upper()
    for column in ("sha256", "autov1", "autov2", "autov3", "crc32", "blake3"):
        assert row[column] is None or row[column] == row[column].upper()


def test_exactly_one_primary_file_per_version_with_files():
    files = [f for model_id in sorted(ITEMS_2023) for f in _normalised(model_id).files]
    by_version: dict[int, list[bool]] = {}
    for f in files:
        by_version.setdefault(f["version_id"], []).append(f["is_primary"])
    assert all(flags.count(True) == 1 for flags in by_version.values())
    assert len(by_version) == 10


def test_lower_case_hashes_are_stored_upper_case_in_their_own_columns():
    item = copy.deepcopy(ITEMS_2023[100102])
    hashes = item["modelVersions"][0]["files"][0]["hashes"]
    item["modelVersions"][0]["files"][0]["hashes"] = {key.lower(): value.lower() for key, value in hashes.items()}
    row = normalise_model(item).files[0]
    assert row["sha256"] == hashes["SHA256"]
    assert row["autov2"] == "15F5AE8859"
    assert row["autov1"] == hashes["AutoV1"]
    assert row["crc32"] == hashes["CRC32"]
    assert row["blake3"] == hashes["BLAKE3"]
    assert row["autov3"] is None


def test_unknown_hash_kinds_and_non_hex_values_are_ignored():
    item = copy.deepcopy(ITEMS_2023[100102])
    item["modelVersions"][0]["files"][0]["hashes"] = {"SHA256": "not a hash!", "MD5": "ABCDEF", "AutoV2": None}
    row = normalise_model(item).files[0]
    assert row["sha256"] is None and row["autov2"] is None
    assert "md5" not in row


# ---------------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", sorted(ITEMS_2023))
def test_2023_image_levels_come_from_the_legacy_strings(model_id):
    rows = _normalised(model_id)
    for image in rows.images:
        expected = LEGACY_LEVEL[LEGACY_IMAGE_NSFW[image["id"]]]
        assert image["nsfw_level"] == expected, image["id"]
        assert image["nsfw"] is (expected >= 4)


@pytest.mark.parametrize("model_id", sorted(ITEMS_2024))
def test_2024_image_levels_come_from_the_int_level(model_id):
    rows = _normalised(model_id)
    raw = [image for _, image in _raw_images(ITEMS_2024[model_id])]
    assert [image["nsfw_level"] for image in rows.images] == [image["nsfwLevel"] for image in raw]
    assert [image["nsfw"] for image in rows.images] == [image["nsfwLevel"] >= 4 for image in raw]
    assert [image["url"] for image in rows.images] == [image["url"] for image in raw]


def test_legacy_boolean_image_nsfw():
    item = copy.deepcopy(ITEMS_2023[100103])
    images = item["modelVersions"][0]["images"]
    images[0]["nsfw"], images[1]["nsfw"] = True, False
    rows = normalise_model(item)
    assert [(image["nsfw_level"], image["nsfw"]) for image in rows.images] == [(4, True), (1, False)]


def test_2023_images_have_ids_galleries_and_meta():
    rows = _normalised(100101)
    assert [(image["id"], image["version_id"]) for image in rows.images] == [
        (400103, 200102), (400104, 200102), (400105, 200102), (400101, 200101), (400102, 200101)]
    assert all(image["model_id"] == 100101 and image["has_meta"] for image in rows.images)
    image = next(image for image in rows.images if image["id"] == 400101)
    assert image["checkpoint_hash"] == "5DEEE83EC0"


def test_image_shared_by_two_galleries_appears_in_each():
    assert 400203 in [image["id"] for image in _normalised(100102).images]
    assert 400203 in [image["id"] for image in _normalised(100201).images]


def test_null_meta_images_have_no_meta():
    rows = _normalised(100401)
    assert [image["id"] for image in rows.images] == [400218, 400219]
    assert all(not image["has_meta"] and image["prompt"] is None for image in rows.images)


def test_2024_image_id_is_taken_from_the_url_when_the_item_omits_it():
    item = copy.deepcopy(ITEMS_2024[500101])
    for image in item["modelVersions"][0]["images"]:
        del image["id"]
    assert [image["id"] for image in normalise_model(item).images] == [800101, 800102, 800103]
    assert image_id_of({"url": "https://image.example.invalid/abc/width=450/123456.jpeg"}) == 123456
    assert image_id_of({"id": 7, "url": "https://image.example.invalid/abc/width=450/123456.jpeg"}) == 7


@pytest.mark.parametrize("model_id", [500103, 500105])
def test_2024_images_without_id_are_kept_distinct_by_url(model_id):
    """README: the images of 500103 and 500105 have no `id` (the 2025 shape) and are counted as distinct by URL.

    Their URLs end in a hex name, not a number, so the id cannot be read from them; the model must still become
    rows (it is an SFW model that serving needs), with one image per URL.
    """
    raw = [image for _, image in _raw_images(ITEMS_2024[model_id])]
    assert all("id" not in image for image in raw)
    rows = _normalised(model_id)
    assert [image["url"] for image in rows.images] == [image["url"] for image in raw]
    ids = [image["id"] for image in rows.images]
    assert all(isinstance(i, int) for i in ids)
    assert len(set(ids)) == len(raw)
    fixture_ids = {image["id"] for item in ALL_ITEMS.values() for _, image in _raw_images(item) if "id" in image}
    assert not set(ids) & fixture_ids


def test_image_without_any_id_or_url_is_an_error_naming_the_image():
    item = copy.deepcopy(ITEMS_2023[100103])
    image = item["modelVersions"][0]["images"][1]
    del image["id"]
    del image["url"]
    with pytest.raises(NormaliseError, match=r"200104 image #1"):
        normalise_model(item)


# ---------------------------------------------------------------------------------------------------------------
# licence, special cases
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sell", ["Sell"]),
        ("RentCivit", ["RentCivit"]),
        (["Image", "RentCivit", "Rent", "Sell"], ["Image", "RentCivit", "Rent", "Sell"]),
        (["Image"], ["Image"]),
        ([], []),
        ("{Image,Rent}", ["Image", "Rent"]),
        ("{Image, RentCivit}", ["Image", "RentCivit"]),
        ("{}", []),
        (None, []),
        ("", []),
    ],
)
def test_commercial_use_forms(value, expected):
    assert commercial_use(value) == expected


def test_allow_commercial_use_in_rows_of_both_eras():
    assert _normalised(100101).model["allow_commercial_use"] == ["Sell"]
    assert _normalised(100103).model["allow_commercial_use"] == ["RentCivit"]
    assert _normalised(500102).model["allow_commercial_use"] == ["Image", "RentCivit", "Rent", "Sell"]
    assert _normalised(500101).model["allow_commercial_use"] == ["Image", "RentCivit"]
    assert _normalised(500104).model["allow_commercial_use"] == ["Image", "Sell"]
    assert _normalised(500106).model["allow_commercial_use"] == ["Image"]
    item = copy.deepcopy(ITEMS_2023[100102])
    item["allowCommercialUse"] = "{Image,Rent}"
    assert normalise_model(item).model["allow_commercial_use"] == ["Image", "Rent"]


def test_archived_model_has_versions_and_images_but_no_files():
    rows = _normalised(500107)
    assert rows.model["mode"] == "Archived"
    assert [v["id"] for v in rows.versions] == [600108, 600109]
    assert all(v["download_url"] is None for v in rows.versions)
    assert rows.files == []
    assert sorted(image["id"] for image in rows.images) == [800117, 800118]
    assert rows.model["nsfw"] is False


def test_missing_creator_of_500103():
    assert "creator" not in ITEMS_2024[500103]
    assert _normalised(500103).model["creator"] is None


def test_missing_creator_gives_none():
    item = copy.deepcopy(ITEMS_2023[100102])
    del item["creator"]
    assert normalise_model(item).model["creator"] is None
    item["creator"] = None
    assert normalise_model(item).model["creator"] is None
    assert _normalised(100102).model["creator"] == ITEMS_2023[100102]["creator"]["username"]


def test_non_ascii_name_creator_and_tags_round_trip():
    rows = _normalised(100201)
    assert rows.model["name"] == "水彩の夢 Watercolor Dream 🎨"
    assert rows.model["creator"] == "みずいろ工房"
    assert "水彩" in rows.model["tags"]


def test_null_descriptions_become_empty_text():
    assert ITEMS_2023[100401]["description"] is None
    assert _normalised(100401).model["description_text"] == ""
    version = next(v for v in _normalised(100102).versions if v["id"] == 200103)
    assert version["description_text"] == ""


# ---------------------------------------------------------------------------------------------------------------
# hostile HTML description (model 100301)
# ---------------------------------------------------------------------------------------------------------------

_TAG = re.compile(r"<\s*/?\s*[A-Za-z!?]")


def test_hostile_description_is_clean_text():
    text = _normalised(100301).model["description_text"]
    for forbidden in ("alert", "display", "color:red", "javascript", "onclick", "onmouseover", "onerror",
                      "evil.example.invalid", "&amp;", "&lt;", "&gt;", "&mdash;"):
        assert forbidden not in text, forbidden
    assert _TAG.search(text) is None
    flat = " ".join(text.split())
    assert "Works best at weight 0.8 & CFG < 8." in flat
    assert "trained on 400 images > 2 epochs." in flat
    assert "Changelog \u2014 trained" in flat
    for word in ("Tidy Hands", "negative embedding", "Put tidyHandsNeg in the negative prompt.", "fewer extra fingers",
                 "cleaner nails"):
        assert word in flat


def test_every_description_is_tag_free_text():
    for model_id in MODELS:
        try:
            rows = _normalised(model_id)
        except NormaliseError:
            continue  # reported by the per-model tests
        for text in [rows.model["description_text"], *(v["description_text"] for v in rows.versions)]:
            assert isinstance(text, str)
            assert _TAG.search(text) is None


# ---------------------------------------------------------------------------------------------------------------
# malformed lines
# ---------------------------------------------------------------------------------------------------------------

MALFORMED_LINES = (FIXTURES / "malformed.jsonl").read_text(encoding="utf-8").splitlines()


def test_malformed_fixture_has_five_lines():
    assert len(MALFORMED_LINES) == 5


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        (0, r"model has no positive integer id \(got None\)"),
        (1, r"model has no positive integer id \(got 'abc'\)"),
        (2, r"model 990003 modelVersions is str, expected a list"),
        (3, r"model 990004 version #0 has no positive integer id \(got None\)"),
    ],
)
def test_malformed_line_raises_normalise_error_naming_the_problem(line, pattern):
    item = json.loads(MALFORMED_LINES[line])
    with pytest.raises(NormaliseError, match=pattern):
        normalise_model(item)


def test_truncated_line_is_not_json():
    assert MALFORMED_LINES[4].startswith('{"id": 9, "name": "cut')
    with pytest.raises(json.JSONDecodeError):
        json.loads(MALFORMED_LINES[4])


@pytest.mark.parametrize("item", [None, [], "text", 5, [{"id": 1}]])
def test_non_object_items_are_normalise_errors(item):
    with pytest.raises(NormaliseError, match="expected an object"):
        normalise_model(item)


@pytest.mark.parametrize("bad_id", [0, -3, True, 1.5, "12", None])
def test_model_ids_must_be_positive_integers(bad_id):
    item = copy.deepcopy(ITEMS_2023[100102])
    item["id"] = bad_id
    with pytest.raises(NormaliseError, match="positive integer id"):
        normalise_model(item)


def test_model_without_type_is_an_error():
    item = copy.deepcopy(ITEMS_2023[100102])
    del item["type"]
    with pytest.raises(NormaliseError, match="100102 has no type"):
        normalise_model(item)


def test_file_without_id_is_an_error_naming_the_version():
    item = copy.deepcopy(ITEMS_2023[100102])
    del item["modelVersions"][0]["files"][0]["id"]
    with pytest.raises(NormaliseError, match="version 200103 file"):
        normalise_model(item)


def test_files_that_are_not_a_list_are_an_error():
    item = copy.deepcopy(ITEMS_2023[100102])
    item["modelVersions"][0]["files"] = {"id": 1}
    with pytest.raises(NormaliseError, match="version 200103 files is dict"):
        normalise_model(item)
