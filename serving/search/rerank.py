"""Tree rerank: a causal LM scores every candidate against the prompt with one shared-prefix pass.

Every candidate is judged with the same text: a prefix (instruction + the user's prompt, in the model's chat
template when it has one) followed by a branch (the candidate's name, kind and description cut to a token budget,
then a fixed question). A branch's score is logit(Yes) - logit(No) of the token that follows it.

`score_independent` runs one forward per candidate on prefix + branch: the baseline, and the reference for
exactness. `score_tree` encodes the prefix once and scores the branches in batches, each branch attending to the
prefix and to itself only, with positions restarting at P (the prefix length), so its scores equal the independent
ones (float32, 1e-4) at about (P + N*L) instead of N*(P + L) token-forwards. Two exact layouts:
- "cache": the prefix keys/values (batch 1, never copied per batch nor mutated) broadcast over a batch of
  right-padded branches, with a 2D mask over prefix + each branch's own tokens;
- "packed": the branches of a batch concatenated into one row after the same prefix cache, with a 4D block mask
  (each branch causal over itself), so no padding at all but attention quadratic in the packed length.
Both are exact; "cache" is the default because it measured faster on SmolLM2-135M (bench/rerank.py: 10-15% at
P=200, L=150, N=8..100 on CPU).
`tree_rerank` prunes in rounds: a short description budget for everyone, more of it for the survivors.
`score_listwise` is the other baseline: all candidates in one prompt, the model writes a ranking.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from transformers.cache_utils import Cache, DynamicLayer

INSTRUCTION = ("You judge whether a Stable Diffusion model (a checkpoint or a LoRA adapter) helps to render an "
               "image prompt.")
QUESTION = "Does this candidate serve the prompt? Answer Yes or No."
LISTWISE_INSTRUCTION = ("Rank the candidates below by how well each Stable Diffusion model (a checkpoint or a LoRA "
                        "adapter) serves the image prompt, best first. Answer with the candidate numbers only, "
                        "like: [2] > [1] > [3]")

MAX_PROMPT_CHARS = 2000
MAX_NAME_CHARS = 200
MAX_KIND_CHARS = 40
_CHARS_PER_TOKEN = 32  # descriptions are cut to budget * this many characters before tokenising
_SLOT = "<<<candidate>>>"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

Method = Literal["cache", "packed"]
DEFAULT_METHOD: Method = "cache"
DEFAULT_BATCH_SIZE = {"cache": 16, "packed": 4}  # branches per forward; packed attention grows with the square
DEFAULT_ROUNDS: tuple[tuple[int, float], ...] = ((32, 0.5), (128, 1.0))


class Rankable(Protocol):
    """What the reranker reads of a candidate: a search `Hit` (serving.search.results) fits, as does `Candidate`."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def description(self) -> str: ...


_READ = ("name", "kind", "description")


@dataclass(frozen=True)
class Candidate:
    """A text to rank that is not a search hit (benchmarks, tests): an id of the caller's and what the reranker
    reads."""

    id: str
    name: str
    kind: str
    description: str

    def __post_init__(self) -> None:
        for field in ("id", *_READ):
            if not isinstance(getattr(self, field), str):
                raise TypeError(f"Candidate.{field} must be a str, got {type(getattr(self, field)).__name__}")


@dataclass(frozen=True)
class Ranked:
    """A candidate's place after `tree_rerank`: its last score and the round (1-based) that gave it."""

    candidate: Rankable
    score: float
    round: int


def _clean(text: str, limit: int) -> str:
    """Control characters become spaces and the text is capped, so hostile fields cost bounded work."""
    return _CONTROL.sub(" ", text[:limit]).strip()


@dataclass(frozen=True)
class _Layout:
    """The token ids every branch shares: the prefix, the question tail, the Yes/No answer tokens."""

    prefix: list[int]
    tail: list[int]
    yes: int
    no: int
    pad: int


def _encode(tok, text: str) -> list[int]:
    return list(tok.encode(text, add_special_tokens=False))


def _leading_specials(tok) -> list[int]:
    """The BOS token when the tokenizer adds one by itself (Llama does, Qwen2 does not)."""
    bos = tok.bos_token_id
    return [bos] if bos is not None and tok.encode("a")[:1] == [bos] else []


def _answer_token(tok, context: str, word: str) -> int:
    """The id the model would emit for `word` right after `context` (' Yes' after text, 'Yes' after a newline)."""
    base = _encode(tok, context)
    variants = (word, " " + word) if context[-1:].isspace() else (" " + word, word)
    for variant in variants:
        ids = _encode(tok, context + variant)
        if len(ids) == len(base) + 1 and ids[: len(base)] == base:
            return ids[-1]
    for variant in variants:
        ids = _encode(tok, variant)
        if len(ids) == 1:
            return ids[0]
    raise ValueError(f"the tokenizer has no single token for {word!r}: this model cannot be scored Yes/No")


def _render_chat(tok, system: str, user: str) -> str | None:
    """A one-turn chat in the model's template (the system text inlined when the template refuses a system
    turn), or None when the tokenizer has no template."""
    if not getattr(tok, "chat_template", None):
        return None
    try:
        return tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": user}],
                                       tokenize=False, add_generation_prompt=True)
    except Exception:  # templates that raise on a system turn (Gemma-style)
        return tok.apply_chat_template([{"role": "user", "content": f"{system}\n\n{user}"}], tokenize=False,
                                       add_generation_prompt=True)


def _layout(tok, prompt: str) -> _Layout:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    user_text = f"Prompt: {_clean(prompt, MAX_PROMPT_CHARS)}\n\nCandidate:\n{_SLOT}\n\n{QUESTION}"
    rendered = _render_chat(tok, INSTRUCTION, user_text)
    if rendered is not None and _SLOT in rendered:
        prefix_text, _, tail_text = rendered.rpartition(_SLOT)
        prefix = _encode(tok, prefix_text)  # the rendered template already holds its special tokens
    else:
        prefix_text, _, tail_text = f"{INSTRUCTION}\n\n{user_text}".rpartition(_SLOT)
        tail_text += "\nAnswer:"
        prefix = _leading_specials(tok) + _encode(tok, prefix_text)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    return _Layout(prefix=prefix, tail=_encode(tok, tail_text), yes=_answer_token(tok, tail_text, "Yes"),
                   no=_answer_token(tok, tail_text, "No"), pad=pad)


def _branch(tok, layout: _Layout, candidate: Rankable, budget: int) -> list[int]:
    """The candidate's text: name, kind, description cut to `budget` tokens, then the question tail."""
    header = (f"Name: {_clean(candidate.name, MAX_NAME_CHARS)}\nKind: {_clean(candidate.kind, MAX_KIND_CHARS)}\n"
              f"Description:")
    description = _clean(candidate.description, budget * _CHARS_PER_TOKEN) if budget else ""
    body = _encode(tok, " " + description)[:budget] if description else []
    return _encode(tok, header) + body + layout.tail


def _check(candidates: Sequence[Rankable], budget: int) -> None:
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
        raise ValueError(f"budget must be an integer >= 0 (description tokens), got {budget!r}")
    for candidate in candidates:
        if not all(isinstance(getattr(candidate, field, None), str) for field in _READ):
            raise TypeError("each candidate needs str name, kind and description (a Candidate or a search Hit), got "
                            f"{type(candidate).__name__}")


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _margin(logits: torch.Tensor, layout: _Layout) -> list[float]:
    """logit(Yes) - logit(No) of each row, in float64 so nothing is lost on the way out."""
    rows = logits.to(torch.float64)
    return (rows[:, layout.yes] - rows[:, layout.no]).tolist()


@torch.inference_mode()
def score_independent(model, tok, prompt: str, candidates: Sequence[Rankable], budget: int = 64) -> list[float]:
    """One forward per candidate on prefix + branch; the reference the tree scores must equal."""
    _check(candidates, budget)
    layout = _layout(tok, prompt)
    device = _device(model)
    scores: list[float] = []
    for candidate in candidates:
        ids = torch.tensor([layout.prefix + _branch(tok, layout, candidate, budget)], device=device)
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1]
        scores.extend(_margin(logits, layout))
    return scores


class _SharedPrefixLayer(DynamicLayer):
    """A cache layer that holds the prefix keys/values once (batch 1) and never grows.

    Each forward gets the prefix broadcast to its batch followed by its own keys; nothing is stored, so one prefix
    pass serves every branch batch and no batch can leak into the next.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        batch = key_states.shape[0]
        keys = torch.cat([self.keys.expand(batch, -1, -1, -1), key_states], dim=-2)
        values = torch.cat([self.values.expand(batch, -1, -1, -1), value_states], dim=-2)
        return keys, values


def _prefix_cache(model, prefix: torch.Tensor) -> Cache:
    """The prefix encoded once, frozen into a cache that every branch batch reads."""
    cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        raise NotImplementedError("tree scoring needs a decoder whose layers all use full attention "
                                  f"(this cache holds {sorted({type(layer).__name__ for layer in layers or []})})")
    return Cache(layers=[_SharedPrefixLayer(layer.keys, layer.values) for layer in layers])


def _cache_batch(model, cache: Cache, branches: list[list[int]], p: int, layout: _Layout,
                 device: torch.device) -> torch.Tensor:
    """Right-padded branches over the broadcast prefix; the logits at each branch's last token."""
    width = max(len(b) for b in branches)
    ids = torch.tensor([b + [layout.pad] * (width - len(b)) for b in branches], device=device)
    lengths = torch.tensor([len(b) for b in branches], device=device)
    columns = torch.arange(width, device=device)
    own = columns.unsqueeze(0) < lengths.unsqueeze(1)
    mask = torch.cat([torch.ones(len(branches), p, dtype=torch.long, device=device), own.long()], dim=1)
    positions = (p + columns).unsqueeze(0).expand(len(branches), -1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                logits_to_keep=(lengths - 1).unsqueeze(1))
    return out.logits[:, 0]


def _packed_mask(model, lengths: list[int], p: int, device: torch.device) -> torch.Tensor:
    """[1, 1, T, P+T]: every token sees the prefix and the earlier tokens of its own branch."""
    total = sum(lengths)
    segment = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    index = torch.arange(total, device=device)
    own = (segment.unsqueeze(1) == segment.unsqueeze(0)) & (index.unsqueeze(1) >= index.unsqueeze(0))
    allowed = torch.cat([torch.ones(total, p, dtype=torch.bool, device=device), own], dim=1)[None, None]
    implementation = model.config._attn_implementation
    if implementation == "sdpa":
        return allowed
    if implementation == "eager":  # eager adds the mask to the attention scores
        zero = torch.zeros((), dtype=model.dtype, device=device)
        return torch.where(allowed, zero, torch.finfo(model.dtype).min)
    raise NotImplementedError(f"packed tree scoring needs sdpa or eager attention, not {implementation!r}")


def _packed_batch(model, cache: Cache, branches: list[list[int]], p: int, layout: _Layout,
                  device: torch.device) -> torch.Tensor:
    """The branches concatenated in one row after the prefix cache, separated by a block mask."""
    lengths = [len(b) for b in branches]
    ids = torch.tensor([[token for branch in branches for token in branch]], device=device)
    positions = torch.cat([p + torch.arange(n, device=device) for n in lengths]).unsqueeze(0)
    ends = torch.tensor(lengths, device=device).cumsum(0) - 1
    out = model(input_ids=ids, attention_mask=_packed_mask(model, lengths, p, device), position_ids=positions,
                past_key_values=cache, use_cache=True, logits_to_keep=ends)
    return out.logits[0]


def token_lengths(tok, prompt: str, candidates: Sequence[Rankable], budget: int) -> tuple[int, list[int]]:
    """(prefix tokens, each candidate's branch tokens): what a scoring pass will cost, for budgets and benchmarks."""
    _check(candidates, budget)
    layout = _layout(tok, prompt)
    return len(layout.prefix), [len(_branch(tok, layout, c, budget)) for c in candidates]


@torch.inference_mode()
def score_tree(model, tok, prompt: str, candidates: Sequence[Rankable], budget: int = 64, *,
               batch_size: int | None = None, method: Method = DEFAULT_METHOD) -> list[float]:
    """The independent scores, from one prefix pass and batched branch passes (same order as `candidates`).

    Branches are sorted by length and cut into batches of `batch_size` (default per method), so a batch pads
    (cache) or packs (packed) branches of similar length.
    """
    _check(candidates, budget)
    if method not in ("cache", "packed"):
        raise ValueError(f"method must be 'cache' or 'packed', got {method!r}")
    batch_size = DEFAULT_BATCH_SIZE[method] if batch_size is None else batch_size
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not candidates:
        return []
    layout = _layout(tok, prompt)
    device = _device(model)
    cache = _prefix_cache(model, torch.tensor([layout.prefix], device=device))
    branches = [_branch(tok, layout, candidate, budget) for candidate in candidates]
    order = sorted(range(len(branches)), key=lambda i: len(branches[i]), reverse=True)
    run = _cache_batch if method == "cache" else _packed_batch
    scores = [0.0] * len(branches)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        logits = run(model, cache, [branches[i] for i in chunk], len(layout.prefix), layout, device)
        for i, score in zip(chunk, _margin(logits, layout), strict=True):
            scores[i] = score
    return scores


def _check_rounds(rounds: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    checked = []
    for item in rounds:
        try:
            budget, keep = item
        except (TypeError, ValueError):
            raise ValueError(f"each round must be (budget_tokens, keep_fraction), got {item!r}") from None
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
            raise ValueError(f"a round's budget must be an integer >= 0, got {budget!r}")
        if not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise ValueError(f"a round's keep fraction must be in (0, 1], got {keep!r}")
        checked.append((budget, float(keep)))
    if not checked:
        raise ValueError("rounds must hold at least one (budget_tokens, keep_fraction)")
    return checked


def tree_rerank(model, tok, prompt: str, candidates: Sequence[Rankable],
                rounds: Sequence[tuple[int, float]] = DEFAULT_ROUNDS, *, batch_size: int | None = None,
                method: Method = DEFAULT_METHOD) -> list[Ranked]:
    """All candidates ranked: the last round's survivors by score, then those pruned later before those pruned
    earlier. Each round scores the current survivors with its description budget and keeps the top fraction
    (at least one); the cheap early rounds spend the long descriptions only on promising candidates."""
    plan = _check_rounds(rounds)
    alive = list(range(len(candidates)))
    last: dict[int, tuple[float, int]] = {}
    for number, (budget, keep) in enumerate(plan, start=1):
        if not alive:
            break
        scores = score_tree(model, tok, prompt, [candidates[i] for i in alive], budget, batch_size=batch_size,
                            method=method)
        for i, score in zip(alive, scores, strict=True):
            last[i] = (score, number)
        alive = sorted(alive, key=lambda i: (-last[i][0], i))[: max(1, math.ceil(keep * len(alive)))]
    order = sorted(last, key=lambda i: (-last[i][1], -last[i][0], i))
    return [Ranked(candidates[i], last[i][0], last[i][1]) for i in order]


def _listwise_prompt(tok, prompt: str, candidates: Sequence[Rankable], budget: int) -> list[int]:
    entries = []
    for number, candidate in enumerate(candidates, start=1):
        ids = _encode(tok, _clean(candidate.description, budget * _CHARS_PER_TOKEN))[:budget] if budget else []
        entries.append(f"[{number}] {_clean(candidate.name, MAX_NAME_CHARS)} "
                       f"({_clean(candidate.kind, MAX_KIND_CHARS)}): {tok.decode(ids).strip()}")
    user = f"Prompt: {_clean(prompt, MAX_PROMPT_CHARS)}\n\nCandidates:\n" + "\n".join(entries) + "\n\nRanking:"
    rendered = _render_chat(tok, LISTWISE_INSTRUCTION, user)
    if rendered is not None:
        return _encode(tok, rendered)
    return _leading_specials(tok) + _encode(tok, f"{LISTWISE_INSTRUCTION}\n\n{user}")


def parse_ranking(text: str, n: int) -> list[int]:
    """0-based candidate indices in the order the text names them ('[3] > [1]', '3, 1', ...), then the
    candidates it never names in input order: garbage ranks everything in input order."""
    named: list[int] = []
    for match in re.findall(r"\d{1,6}", text if isinstance(text, str) else ""):
        index = int(match) - 1
        if 0 <= index < n and index not in named:
            named.append(index)
    seen = set(named)
    return named + [i for i in range(n) if i not in seen]


@torch.inference_mode()
def score_listwise(model, tok, prompt: str, candidates: Sequence[Rankable], max_new_tokens: int | None = None,
                   budget: int = 64) -> list[Rankable]:
    """The candidates in the order the model writes (greedy decoding); about 6 new tokens per candidate by
    default, enough for '[12] > ' each."""
    _check(candidates, budget)
    if not candidates:
        return []
    if max_new_tokens is None:
        max_new_tokens = 6 * len(candidates) + 8
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    ids = torch.tensor([_listwise_prompt(tok, prompt, candidates, budget)], device=_device(model))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=pad)
    text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    return [candidates[i] for i in parse_ranking(text, len(candidates))]
