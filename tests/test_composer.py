"""The composer: one adapter per keyword unless they agree, style cap, character rule, weights, trigger words,
the A1111 form; an LLM keyword mapper is optional and a failing one changes nothing."""

from __future__ import annotations

import math

import pytest

from serving.search.results import Hit
from serving.studio.composer import DEFAULT_WEIGHT, compose, lora_name, prompt_keywords, proper_nouns


def Adapter(version_id, name, kind, trigger_words=(), weight=DEFAULT_WEIGHT, *, score=0.0, description="",
            file_name=None, rerank_score=None) -> Hit:
    """A retrieved adapter as search returns it, with only what the composer reads set."""
    return Hit(model_id=1, version_id=version_id, name=name, version_name="v1", type="LORA", kind=kind,
               base_model="SD 1.5", base_model_family="SD1", score=score, similarity=0.0, downloads=0,
               co_usage_images=0, trigger_words=trigger_words, recommended_weight=weight, download_url=None, why="",
               file_name=file_name, description=description, rerank_score=rerank_score)


def _ids(composition) -> list[int]:
    return [c.adapter.version_id for c in composition.adapters]


def test_keywords_and_proper_nouns():
    assert prompt_keywords("Masterpiece, best quality, two Cats on the Cities' roofs") == ["two", "cat", "city", "roof"]
    assert proper_nouns("Masterpiece, portrait of Ada in Paris, Hatsune Miku, HDR") == {"ada", "paris", "hatsune",
                                                                                          "miku"}
    assert proper_nouns("A cat. Beautiful sunset, Detailed") == set()


def test_one_adapter_per_keyword_unless_they_agree():
    castle = Adapter(1, "Castle builder", "object", ("cstl",), 0.9, score=3.0, description="medieval castle")
    castle2 = Adapter(2, "Castles XL", "object", ("castlexl",), 0.8, score=2.0, description="castle walls")
    castle_style = Adapter(3, "Castle painting", "style", (), 0.7, score=2.5, description="castle art")
    dragon = Adapter(4, "Dragon wings", "concept", ("dragonwings",), 0.6, score=-1.0, description="a dragon")
    result = compose("a castle with a dragon", [dragon, castle2, castle, castle_style])
    assert _ids(result) == [1, 2, 4]  # 1 and 2 agree (same kind, both above 0); the style one conflicts
    weights = {c.adapter.version_id: c.weight for c in result.adapters}
    assert weights == {1: round(0.9 / math.sqrt(2), 2), 2: round(0.8 / math.sqrt(2), 2), 4: 0.6}
    strict = compose("a castle with a dragon", [dragon, castle2, castle], agree_score=2.5)
    assert _ids(strict) == [1, 4]


def test_the_rerank_score_orders_and_agrees_in_place_of_the_retrieval_score():
    castle = Adapter(1, "Castle builder", "object", score=3.0, description="medieval castle")
    castle2 = Adapter(2, "Castles XL", "object", score=2.0, rerank_score=4.0, description="castle walls")
    assert _ids(compose("a castle", [castle, castle2], max_adapters=1)) == [2]
    assert _ids(compose("a castle", [castle, castle2], agree_score=3.5)) == [2]


def test_kinds_without_rules_compose_as_concepts():
    other = Adapter(1, "Castle builder", "other", score=2.0, description="medieval castle")
    concept = Adapter(2, "Castles XL", "concept", score=1.0, description="castle walls")
    result = compose("a castle", [other, concept])
    assert _ids(result) == [1, 2]  # the same kind as a concept: they agree
    assert [c.kind for c in result.adapters] == ["concept", "concept"]


def test_an_adapter_keeps_the_keywords_nobody_else_serves():
    a = Adapter(1, "Neon city", "background", score=2.0, description="neon city lights")
    b = Adapter(2, "Rainy neon", "style", score=1.0, description="rain and neon")
    result = compose("neon city in the rain", [a, b])
    assert [(c.adapter.version_id, c.keywords) for c in result.adapters] == [(1, ("neon", "city")), (2, ("rain",))]


def test_at_most_two_styles_and_max_adapters():
    styles = [Adapter(i, f"Watercolor {i}", "style", score=float(10 - i), description="watercolor painting")
              for i in range(4)]
    result = compose("watercolor painting of a fox", styles, agree_score=0.0)
    assert _ids(result) == [0, 1]
    assert [c.weight for c in result.adapters] == [round(0.8 / math.sqrt(2), 2)] * 2
    assert _ids(compose("watercolor painting", styles, max_styles=4, max_adapters=3)) == [0, 1, 2]
    assert _ids(compose("watercolor painting", styles, max_styles=0)) == []


def test_character_only_when_the_prompt_names_one():
    miku = Adapter(1, "Hatsune Miku", "character", ("hatsune miku", "twintails"), score=5.0,
                   description="anime girl character with twintails")
    generic = Adapter(2, "Generic girl", "character", (), score=4.0, description="a cute anime girl")
    assert _ids(compose("a cute anime girl on a beach", [miku, generic])) == []
    assert _ids(compose("hatsune miku singing on stage", [miku, generic])) == [1]
    assert _ids(compose("portrait of Alice, a cute girl", [generic])) == []  # Alice is not this adapter
    named = Adapter(3, "Alice v2", "character", ("alc",), score=1.0, description="Alice from wonderland")
    assert _ids(compose("portrait of Alice, a cute girl", [named])) == [3]


def test_trigger_words_once_and_a1111_form():
    a = Adapter(1, "Pixel Art <XL>", "style", ("pixel art", "<lora:evil:9>", "pxl"), 0.7, score=1.0,
                description="pixel art sprites")
    b = Adapter(2, "Knight armor", "object", ("pxl", "armor"), 1.2, score=0.5, description="knight armor")
    result = compose("pixel art sprite of a knight", [a, b])
    assert [(c.adapter.version_id, c.keywords) for c in result.adapters] == [(1, ("pixel", "sprite")),
                                                                            (2, ("knight",))]
    assert result.prompt == "pixel art sprite of a knight, lora:evil:9, pxl, armor"
    assert result.a1111 == f"{result.prompt} <lora:Pixel_Art_XL:0.7> <lora:Knight_armor:1.2>"
    assert lora_name(Adapter(9, "???", "style")) == "lora_9"
    assert lora_name(Adapter(12, "", "style", file_name="")) == "lora_12"


def test_a1111_form_names_loras_by_file_and_escapes_literal_brackets():
    nikke = Adapter(7, "Alice | NIKKE", "character", ("alice (nikke)", "pink bodysuit"), 0.8, score=1.0,
                    description="alice", file_name="sub\\alice_nikke-v1.2.safetensors")
    result = compose("portrait of Alice dancing", [nikke])
    assert result.prompt == "portrait of Alice dancing, alice (nikke), pink bodysuit"
    assert result.a1111 == r"portrait of Alice dancing, alice \(nikke\), pink bodysuit <lora:alice_nikke-v1.2:0.8>"
    assert lora_name(Adapter(8, "x", "style", file_name="we:ird<name>.safetensors")) == "we ird name"


def test_given_keywords_and_mapper():
    a = Adapter(1, "Thing one", "object", score=1.0)
    b = Adapter(2, "Thing two", "clothing", score=0.5)
    calls = []

    def mapper(prompt, keywords, adapters):
        calls.append(keywords)
        return {2: ["hat", "not-in-prompt"], 99: ["hat"], "1": ["dress"], 7: "x"}

    result = compose("a woman in a red dress and a hat", [a, b], keywords={1: ("Red Dress",)}, mapper=mapper)
    assert [(c.adapter.version_id, c.keywords) for c in result.adapters] == [(1, ("red dress",)), (2, ("hat",))]
    assert calls == [["woman", "red", "dress", "hat"]]

    def broken(prompt, keywords, adapters):
        raise RuntimeError("LLM down")

    fallback = compose("a hat", [Adapter(5, "Fancy hat", "clothing", score=1.0)], mapper=broken)
    assert _ids(fallback) == [5]
    garbage = compose("a hat", [Adapter(5, "Fancy hat", "clothing", score=1.0)], mapper=lambda *a: "garbage")
    assert _ids(garbage) == [5]


def test_weights_are_sane_whatever_comes_in():
    odd = [Adapter(1, "Cat ears", "object", weight=float("nan"), score=1.0),
           Adapter(2, "Cat tail", "clothing", weight=-3, score=float("nan")),
           Adapter(3, "Cat fur", "concept", weight=50, score=float("inf"))]
    result = compose("cat", odd)
    assert [(c.adapter.version_id, c.weight) for c in result.adapters] == [(1, 0.8)]  # non-finite scores rank last
    capped = compose("cat", [Adapter(3, "Cat fur", "concept", weight=50, score=1.0)])
    assert capped.adapters[0].weight == 2.0
    assert compose("cat", [Adapter(4, "Cat nose", "object", weight=None, score=1.0)]).adapters[0].weight == 0.8
    assert compose("", odd).adapters == []
    assert compose("cat", []).a1111 == "cat"


def test_hostile_prompt_and_deterministic():
    prompt = "\x00\x1b cat " * 30000
    adapters = [Adapter(i, f"Cat {i}", "object", score=float(i % 3)) for i in range(20)]
    first = compose(prompt, adapters)
    assert first == compose(prompt, list(reversed(adapters)))
    assert len(first.prompt) <= 4100 and "\x00" not in first.a1111


@pytest.mark.parametrize("bad", [dict(kind="weird"), dict(trigger_words="pxl"), dict(weight="0.7"),
                                 dict(name=None), dict(version_id="1"), dict(score="1")])
def test_bad_adapters_are_refused(bad):
    fields = dict(version_id=1, name="n", kind="style") | bad
    with pytest.raises((TypeError, ValueError)):
        compose("x", [Adapter(**fields)])
    with pytest.raises(ValueError):
        compose("x", [], max_styles=-1)
    with pytest.raises(TypeError):
        compose(None, [])


def test_enhancers_need_no_keyword_and_are_capped() -> None:
    from dataclasses import replace

    tweak = replace(Adapter(901, "Detail Tweaker", "concept", score=9.0), role="enhancer")
    other = replace(Adapter(902, "Add More Details", "concept", score=8.0), role="enhancer")
    fox = Adapter(903, "Fox Spirit", "character", ("fox spirit",), score=1.0)
    composition = compose("a fox spirit in a forest", [tweak, other, fox])
    chosen = [item.adapter.version_id for item in composition.adapters]
    assert 901 in chosen and 902 not in chosen and 903 in chosen
    assert _ids(compose("a fox spirit in a forest", [tweak, other], max_enhancers=2)) == [901, 902]
