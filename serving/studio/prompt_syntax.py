"""A1111 prompt syntax for the text encoder: emphasis weights, BREAK, and prompts longer than CLIP's 77 tokens.

Prompts pasted from Civitai are written for AUTOMATIC1111's web UI: `(word)` means x1.1, `[word]` /1.1,
`(word:1.3)` x1.3, `\\(` a literal bracket, `BREAK` starts a new chunk, a loaded textual inversion's name calls its
vectors, and a prompt runs past 75 tokens in 75-token chunks, each encoded separately with its own start and end
token and the results concatenated. Plain diffusers reads the brackets as text and cuts the prompt at 77 tokens, so
the same prompt gives another image; this module encodes as A1111 does (its `parse_prompt_attention` and chunking,
comma backtracking included) for SD 1.x pipelines; the syntax itself is parsed by crawlers.a1111.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crawlers.a1111 import is_break, parse_attention

CHUNK_TOKENS = 75  # CLIP's 77 minus the start and end tokens
COMMA_BACKTRACK = 20  # a chunk that fills up ends after its last comma when that comma is this close to the end
MEAN_FLOOR = 1e-4  # relative to the mean magnitude: below it a chunk's mean counts as 0 (no rescaling)


def _embedding_lengths(tokenizer: Any) -> dict[int, int]:
    """First token id -> vector count of each multi-vector textual inversion on the tokenizer (diffusers adds
    `name`, `name_1`, ... `name_{n-1}`)."""
    added = tokenizer.added_tokens_encoder
    lengths = {}
    for name, token_id in added.items():
        count = 1
        while f"{name}_{count}" in added:
            count += 1
        if count > 1:
            lengths[token_id] = count
    return lengths


@dataclass
class Chunk:
    """77 token ids (start, 75 of the prompt or padding, end) and one weight per token."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def chunk_prompt(tokenizer: Any, text: str, expand: Callable[[str], str] | None = None) -> list[Chunk]:
    """The prompt's tokens in 75-token chunks with their weights, closed with start/end tokens and padded with the
    end token (A1111's tokenize_line). A chunk that fills up is cut after its last comma when that comma is at most
    COMMA_BACKTRACK tokens back, so a phrase is not split across chunks. Text is lowercased first (CLIP lowercases
    anyway; textual-inversion words are registered lowercased, so they match in any case), then `expand` rewrites
    it (diffusers' maybe_convert_prompt: a multi-vector embedding's word becomes one token per vector)."""
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    comma = None if comma == tokenizer.unk_token_id else comma  # a vocabulary without CLIP's comma token
    vectors = _embedding_lengths(tokenizer) if expand else {}
    runs = parse_attention(text)
    pieces = [expand(piece.lower()) if expand else piece.lower()
              for piece, weight in runs if not is_break(piece, weight)]
    token_lists = iter(tokenizer(pieces, add_special_tokens=False, truncation=False)["input_ids"] if pieces else [])
    chunks: list[Chunk] = []
    current = Chunk()
    last_comma = -1

    def close(chunk: Chunk) -> None:
        padding = CHUNK_TOKENS - len(chunk.tokens)
        chunks.append(Chunk([tokenizer.bos_token_id, *chunk.tokens, *[tokenizer.eos_token_id] * padding,
                             tokenizer.eos_token_id], [1.0, *chunk.weights, *[1.0] * padding, 1.0]))

    for piece, weight in runs:
        if is_break(piece, weight):
            close(current)
            current, last_comma = Chunk(), -1
            continue
        for token in next(token_lists):
            length = vectors.get(token, 1)
            if length > 1 and len(current.tokens) + length > CHUNK_TOKENS:  # an embedding is never split
                close(current)
                current, last_comma = Chunk(), -1
            if token == comma:
                last_comma = len(current.tokens)
            elif (len(current.tokens) == CHUNK_TOKENS and last_comma != -1
                  and len(current.tokens) - last_comma <= COMMA_BACKTRACK):
                cut = last_comma + 1
                moved = Chunk(current.tokens[cut:], current.weights[cut:])
                close(Chunk(current.tokens[:cut], current.weights[:cut]))
                current, last_comma = moved, -1
            if len(current.tokens) == CHUNK_TOKENS:
                close(current)
                current, last_comma = Chunk(), -1
            current.tokens.append(token)
            current.weights.append(weight)
    if current.tokens or not chunks:
        close(current)
    return chunks


def final_layer_norm(encoder: Any) -> Any:
    """The CLIP text encoder's last layer norm (transformers 5 flattened CLIPTextModel: no `text_model` level)."""
    return encoder.text_model.final_layer_norm if hasattr(encoder, "text_model") else encoder.final_layer_norm


def encode_prompts(pipe: Any, prompt: str, negative_prompt: str, clip_skip: int | None = None) -> dict[str, Any]:
    """`prompt_embeds` and `negative_prompt_embeds` for a diffusers SD 1.x pipeline call: each chunk encoded by the
    pipeline's text encoder (with its LoRA layers) from the layer `clip_skip` counts back (A1111's meaning: 2 = the
    penultimate, final layer norm applied), scaled by its token weights with the chunk's mean kept, chunks
    concatenated; the shorter prompt is padded with encoded empty chunks so both have the same length."""
    import torch

    encoder, tokenizer = pipe.text_encoder, pipe.tokenizer
    final_norm = final_layer_norm(encoder)
    skip = clip_skip if clip_skip and clip_skip > 1 else 1

    def encode(chunks: list[Chunk]):
        ids = torch.tensor([chunk.tokens for chunk in chunks], device=encoder.device)
        weights = torch.tensor([chunk.weights for chunk in chunks], device=encoder.device)
        with torch.no_grad():
            if skip == 1:
                hidden = encoder(ids)[0]
            else:
                hidden = final_norm(encoder(ids, output_hidden_states=True).hidden_states[-skip])
            weighted = hidden * weights.unsqueeze(-1).to(hidden.dtype)
            mean, new_mean = hidden.mean(dim=(1, 2), keepdim=True), weighted.mean(dim=(1, 2), keepdim=True)
            # A1111 rescales to the unweighted mean; a mean of about 0 (a final layer norm without bias, as in
            # random test encoders) would make that 0/0, so such a chunk keeps its weighted values.
            meaningful = new_mean.abs() > MEAN_FLOOR * hidden.abs().mean(dim=(1, 2), keepdim=True)
            weighted = weighted * torch.where(meaningful, mean / torch.where(meaningful, new_mean, 1.0), 1.0)
        return weighted.reshape(1, -1, hidden.shape[-1]).to(encoder.dtype)

    expand = (lambda text: pipe.maybe_convert_prompt(text, tokenizer)) if hasattr(pipe, "maybe_convert_prompt") else None
    positive, negative = chunk_prompt(tokenizer, prompt, expand), chunk_prompt(tokenizer, negative_prompt, expand)
    empty = chunk_prompt(tokenizer, "")[0]
    longest = max(len(positive), len(negative))
    positive += [empty] * (longest - len(positive))
    negative += [empty] * (longest - len(negative))
    return {"prompt": None, "negative_prompt": None, "prompt_embeds": encode(positive),
            "negative_prompt_embeds": encode(negative)}
