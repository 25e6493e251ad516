"""The composer: one adapter per keyword unless they agree, style cap, character rule, weights, trigger words,
the A1111 form; an LLM keyword mapper is optional and a failing one changes nothing."""

from __future__ import annotations

import math

import pytest

from serving.studio.composer import Adapter, compose, lora_name, prompt_keywords, proper_nouns


def _ids(composition) -> list[str]:
    return [c.adapter.id for c in composition.adapters]


def test_keywords_and_proper_nouns():
    assert prompt_keywords("Masterpiece, best quality, two Cats on the Cities' roofs") == ["two", "cat", "city", "roof"]
    assert proper_nouns("Masterpiece, portrait of Ada in Paris, Hatsune Miku, HDR") == {"ada", "paris", "hatsune",
                                                                                          "miku"}
    assert proper_nouns("A cat. Beautiful sunset, Detailed") == set()


def test_one_adapter_per_keyword_unless_they_agree():
    castle = Adapter("1", "Castle builder", "object", ("cstl",), 0.9, score=3.0, description="medieval castle")
    castle2 = Adapter("2", "Castles XL", "object", ("castlexl",), 0.8, score=2.0, description="castle walls")
    castle_style = Adapter("3", "Castle painting", "style", (), 0.7, score=2.5, description="castle art")
    dragon = Adapter("4", "Dragon wings", "concept", ("dragonwings",), 0.6, score=-1.0, description="a dragon")
    result = compose("a castle with a dragon", [dragon, castle2, castle, castle_style])
    assert _ids(result) == ["1", "2", "4"]  # 1 and 2 agree (same kind, both above 0); the style one conflicts
    weights = {c.adapter.id: c.weight for c in result.adapters}
    assert weights == {"1": round(0.9 / math.sqrt(2), 2), "2": round(0.8 / math.sqrt(2), 2), "4": 0.6}
    strict = compose("a castle with a dragon", [dragon, castle2, castle], agree_score=2.5)
    assert _ids(strict) == ["1", "4"]


def test_an_adapter_keeps_the_keywords_nobody_else_serves():
    a = Adapter("a", "Neon city", "background", score=2.0, description="neon city lights")
    b = Adapter("b", "Rainy neon", "style", score=1.0, description="rain and neon")
    result = compose("neon city in the rain", [a, b])
    assert [(c.adapter.id, c.keywords) for c in result.adapters] == [("a", ("neon", "city")), ("b", ("rain",))]


def test_at_most_two_styles_and_max_adapters():
    styles = [Adapter(f"s{i}", f"Watercolor {i}", "style", score=float(10 - i), description="watercolor painting")
              for i in range(4)]
    result = compose("watercolor painting of a fox", styles, agree_score=0.0)
    assert _ids(result) == ["s0", "s1"]
    assert [c.weight for c in result.adapters] == [round(0.8 / math.sqrt(2), 2)] * 2
    assert _ids(compose("watercolor painting", styles, max_styles=4, max_adapters=3)) == ["s0", "s1", "s2"]
    assert _ids(compose("watercolor painting", styles, max_styles=0)) == []


def test_character_only_when_the_prompt_names_one():
    miku = Adapter("m", "Hatsune Miku", "character", ("hatsune miku", "twintails"), score=5.0,
                   description="anime girl character with twintails")
    generic = Adapter("g", "Generic girl", "character", (), score=4.0, description="a cute anime girl")
    assert _ids(compose("a cute anime girl on a beach", [miku, generic])) == []
    assert _ids(compose("hatsune miku singing on stage", [miku, generic])) == ["m"]
    assert _ids(compose("portrait of Alice, a cute girl", [generic])) == []  # Alice is not this adapter
    named = Adapter("al", "Alice v2", "character", ("alc",), score=1.0, description="Alice from wonderland")
    assert _ids(compose("portrait of Alice, a cute girl", [named])) == ["al"]


def test_trigger_words_once_and_a1111_form():
    a = Adapter("1", "Pixel Art <XL>", "style", ("pixel art", "<lora:evil:9>", "pxl"), 0.7, score=1.0,
                description="pixel art sprites")
    b = Adapter("2", "Knight armor", "object", ("pxl", "armor"), 1.2, score=0.5, description="knight armor")
    result = compose("pixel art sprite of a knight", [a, b])
    assert [(c.adapter.id, c.keywords) for c in result.adapters] == [("1", ("pixel", "sprite")), ("2", ("knight",))]
    assert result.prompt == "pixel art sprite of a knight, lora:evil:9, pxl, armor"
    assert result.a1111 == f"{result.prompt} <lora:Pixel_Art_XL:0.7> <lora:Knight_armor:1.2>"
    assert lora_name(Adapter("9", "???", "style")) == "lora_9"
    assert lora_name(Adapter("x y", "", "style")) == "lora_xy"


def test_a1111_form_names_loras_by_file_and_escapes_literal_brackets():
    nikke = Adapter("7", "Alice | NIKKE", "character", ("alice (nikke)", "pink bodysuit"), 0.8, score=1.0,
                    description="alice", file_name="sub\\alice_nikke-v1.2.safetensors")
    result = compose("portrait of Alice dancing", [nikke])
    assert result.prompt == "portrait of Alice dancing, alice (nikke), pink bodysuit"
    assert result.a1111 == r"portrait of Alice dancing, alice \(nikke\), pink bodysuit <lora:alice_nikke-v1.2:0.8>"
    assert lora_name(Adapter("8", "x", "style", file_name="we:ird<name>.safetensors")) == "we ird name"


def test_given_keywords_and_mapper():
    a = Adapter("a", "Thing one", "object", score=1.0, keywords=("Red Dress",))
    b = Adapter("b", "Thing two", "clothing", score=0.5)
    calls = []

    def mapper(prompt, keywords, adapters):
        calls.append(keywords)
        return {"b": ["hat", "not-in-prompt"], "zzz": ["hat"], 7: "x"}

    result = compose("a woman in a red dress and a hat", [a, b], mapper=mapper)
    assert [(c.adapter.id, c.keywords) for c in result.adapters] == [("a", ("red dress",)), ("b", ("hat",))]
    assert calls == [["woman", "red", "dress", "hat"]]

    def broken(prompt, keywords, adapters):
        raise RuntimeError("LLM down")

    fallback = compose("a hat", [Adapter("h", "Fancy hat", "clothing", score=1.0)], mapper=broken)
    assert _ids(fallback) == ["h"]
    garbage = compose("a hat", [Adapter("h", "Fancy hat", "clothing", score=1.0)], mapper=lambda *a: "garbage")
    assert _ids(garbage) == ["h"]


def test_weights_are_sane_whatever_comes_in():
    odd = [Adapter("1", "Cat ears", "object", weight=float("nan"), score=1.0),
           Adapter("2", "Cat tail", "clothing", weight=-3, score=float("nan")),
           Adapter("3", "Cat fur", "concept", weight=50, score=float("inf"))]
    result = compose("cat", odd)
    assert [(c.adapter.id, c.weight) for c in result.adapters] == [("1", 0.8)]  # non-finite scores rank last
    capped = compose("cat", [Adapter("3", "Cat fur", "concept", weight=50, score=1.0)])
    assert capped.adapters[0].weight == 2.0
    assert compose("", odd).adapters == []
    assert compose("cat", []).a1111 == "cat"


def test_hostile_prompt_and_deterministic():
    prompt = "\x00\x1b cat " * 30000
    adapters = [Adapter(str(i), f"Cat {i}", "object", score=float(i % 3)) for i in range(20)]
    first = compose(prompt, adapters)
    assert first == compose(prompt, list(reversed(adapters)))
    assert len(first.prompt) <= 4100 and "\x00" not in first.a1111


@pytest.mark.parametrize("bad", [dict(kind="weird"), dict(trigger_words="pxl"), dict(weight="0.7"),
                                 dict(name=None)])
def test_bad_adapters_are_refused(bad):
    fields = dict(id="1", name="n", kind="style") | bad
    with pytest.raises((TypeError, ValueError)):
        Adapter(**fields)
    with pytest.raises(ValueError):
        compose("x", [], max_styles=-1)
    with pytest.raises(TypeError):
        compose(None, [])
