"""A1111 prompt syntax: emphasis parsing (A1111's documented examples), 75-token chunks with BREAK and comma
backtracking, on the real CLIP BPE tokenizer the pipelines use."""

from __future__ import annotations

import pytest

from serving.studio import sd_components as sdc
from crawlers.a1111 import BREAK, parse_attention, plain_text
from serving.studio.prompt_syntax import CHUNK_TOKENS, chunk_prompt


@pytest.mark.parametrize(("prompt", "runs"), [  # the examples of A1111's parse_prompt_attention docstring
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.1 * 1.1 * 1.3), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.1 ** 4), (".", 1.1)]),
    ("", [("", 1.0)]),
    ("a cat: sitting", [("a cat: sitting", 1.0)]),
    ("x BREAK y", [("x", 1.0), (BREAK, -1.0), ("y", 1.0)]),
])
def test_emphasis_is_parsed_as_a1111_does(prompt: str, runs: list) -> None:
    parsed = parse_attention(prompt)
    assert [text for text, _ in parsed] == [text for text, _ in runs]
    assert [weight for _, weight in parsed] == pytest.approx([weight for _, weight in runs])


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return sdc.load_clip_tokenizer(sdc.write_clip_tokenizer(tmp_path_factory.mktemp("tokenizer")))


def words(n: int, start: int = 0) -> str:
    """n words that are one CLIP token each."""
    vocabulary = ("cat", "dog", "tree", "house", "river", "stone", "cloud", "red", "blue", "green")
    return " ".join(vocabulary[(start + i) % len(vocabulary)] for i in range(n))


def test_a_short_prompt_is_one_padded_chunk(tokenizer) -> None:
    (chunk,) = chunk_prompt(tokenizer, "a (red:1.5) cat")
    assert len(chunk.tokens) == len(chunk.weights) == CHUNK_TOKENS + 2
    assert chunk.tokens[0] == tokenizer.bos_token_id and set(chunk.tokens[4:]) == {tokenizer.eos_token_id}
    assert chunk.tokens[1:4] == tokenizer("a red cat", add_special_tokens=False)["input_ids"]
    assert chunk.weights[:5] == [1.0, 1.0, 1.5, 1.0, 1.0]


def test_a_long_prompt_runs_on_in_more_chunks(tokenizer) -> None:
    chunks = chunk_prompt(tokenizer, words(180))
    assert len(chunks) == 3
    body = [token for chunk in chunks for token in chunk.tokens[1:-1]]
    assert body[:180] == tokenizer(words(180), add_special_tokens=False)["input_ids"]
    assert set(body[180:]) == {tokenizer.eos_token_id}


def test_break_starts_a_new_chunk(tokenizer) -> None:
    chunks = chunk_prompt(tokenizer, "red cat BREAK blue dog")
    assert len(chunks) == 2
    assert chunks[1].tokens[1:3] == tokenizer("blue dog", add_special_tokens=False)["input_ids"]


def test_a_full_chunk_ends_at_its_last_comma(tokenizer) -> None:
    prompt = words(70) + ", " + words(10, start=3)  # the comma is token 71: the phrase after it moves on whole
    first, second = chunk_prompt(tokenizer, prompt)
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    assert first.tokens[71] == comma and set(first.tokens[72:]) == {tokenizer.eos_token_id}
    assert second.tokens[1:11] == tokenizer(words(10, start=3), add_special_tokens=False)["input_ids"]
    far = words(40) + ", " + words(50)  # a comma 35 tokens back is too far: the chunk is cut at 75 tokens
    assert chunk_prompt(tokenizer, far)[0].tokens[41] == comma
    assert tokenizer.eos_token_id not in chunk_prompt(tokenizer, far)[0].tokens[1:-1]


def test_a_multi_vector_embedding_is_never_split_across_chunks(tokenizer) -> None:
    import copy

    with_embedding = copy.deepcopy(tokenizer)
    with_embedding.add_tokens(["grub", "grub_1", "grub_2"])  # as diffusers registers a 3-vector embedding

    def expand(text: str) -> str:
        return text.replace("grub", "grub grub_1 grub_2")

    first, second = chunk_prompt(with_embedding, words(73) + " grub", expand)
    ids = with_embedding.convert_tokens_to_ids(["grub", "grub_1", "grub_2"])
    assert set(first.tokens[74:]) == {with_embedding.eos_token_id}  # 73 words, then padding: 3 vectors do not fit
    assert second.tokens[1:4] == ids
    (whole,) = chunk_prompt(with_embedding, words(72) + " grub", expand)  # 72 + 3 = 75: they fit
    assert whole.tokens[73:76] == ids


def test_malformed_weights_are_text() -> None:
    (run,) = parse_attention("(x:1.2.3) y")  # A1111 fails on float("1.2.3"); here the bracket stays open
    assert run == ("x:1.2.3) y", pytest.approx(1.1))


def test_plain_text_drops_a1111_syntax() -> None:
    text = plain_text("<lora:inkwash_v2:0.7> (masterpiece:1.2), [foggy] harbor BREAK \\(lit\\)")
    assert text.split() == ["masterpiece", ",", "foggy", "harbor", "(lit)"]
