"""Normalisation and fingerprints: what makes two requests "the same" for the cache.

- The exact fast path keys on the *normalised* prompt (NFKC, case-folded, whitespace
  collapsed), so trivial re-typings hit without an embedding.
- The generation parameters are fingerprinted canonically (key order, 1 vs 1.0, a single
  stop string vs a one-element list do not matter) so a temperature-0 answer is never served
  for temperature 1.
- The conversation context (everything but the last user turn) is fingerprinted *exactly*:
  a follow-up only means the same thing after the same conversation.

Rule for unset temperature: a request that does not set `temperature` counts as deterministic
(the caller did not ask for sampling, and the pure Lookup/Store API has no sampler at all).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cache.types import SHARED_TENANT, LookupRequest, Message

IGNORED_PARAMS = frozenset({"stream", "stream_options", "user", "metadata", "timeout", "store"})
"""Transport/bookkeeping fields that do not change the generated text."""

SAMPLING_PARAMS = frozenset({"temperature", "top_p", "top_k", "min_p", "typical_p", "seed"})
"""Knobs that only change *which* sample is drawn; dropped from the core fingerprint that
`cache_nondeterministic` categories match on."""

_KEY_HEX = 32  # 128-bit ids: collision-free in practice, short enough for record ids


def normalise_prompt(text: str, *, piece_chars: int = 1 << 16) -> str:
    """NFKC (full-width, ligatures), case-fold, collapse runs of whitespace, strip.

    A long text is done in pieces of about `piece_chars`, each cut just before a space: each
    piece is a short C call, so a thread normalising a 1 MB prompt lets the GIL go between
    pieces instead of holding the event loop for the whole text. The result is the same as
    in one piece: NFKC never composes across U+0020, case folding is per character, and
    every piece after the first starts with whitespace, so no word is split between two.
    """
    words: list[str] = []
    start, n = 0, len(text)
    while start < n:
        end = text.find(" ", start + piece_chars) if n - start > piece_chars else -1
        end = n if end < 0 else end
        words.extend(unicodedata.normalize("NFKC", text[start:end]).casefold().split())
        start = end
    return " ".join(words)


def canonical_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The params that shape the output, in a canonical JSON-ready form."""
    out = {}
    for key in sorted(params):
        if key in IGNORED_PARAMS or params[key] is None:
            continue
        value = _canonical(params[key])
        if key == "stop":
            value = sorted([value] if isinstance(value, str) else value)
        out[key] = value
    return out


def params_fingerprint(params: Mapping[str, Any]) -> str:
    return _digest(canonical_params(params))


def core_params_fingerprint(params: Mapping[str, Any]) -> str:
    """Fingerprint without the sampling knobs (temperature, top_p, seed, ...)."""
    return _digest({k: v for k, v in canonical_params(params).items() if k not in SAMPLING_PARAMS})


def context_fingerprint(context: Sequence[Message]) -> str:
    """Exact fingerprint of the conversation before (and after) the last user turn; "" if none."""
    if not context:
        return ""
    return _digest([[role, content] for role, content in context])


def is_deterministic(params: Mapping[str, Any]) -> bool:
    """temperature > 0 without a seed samples a different answer each time: not cacheable
    unless the category's policy says `cache_nondeterministic`."""
    temperature = params.get("temperature")
    return temperature is None or float(temperature) == 0.0 or params.get("seed") is not None


def exact_key(
    *, scope: str, category: str, prompt: str, context_fp: str, model: str, params_fp: str
) -> str:
    """Entry id of the exact path: hash(tenant-or-"*", category, normalised prompt, context,
    model, params). `prompt` must already be normalised."""
    return _digest([scope, category, prompt, context_fp, model, params_fp])


def route_key(*, scope: str, prompt: str, context_fp: str, model: str, params_fp: str) -> str:
    """Like exact_key without the category: remembers which category an exact prompt was
    stored under, so an uncategorised repeat skips embedding and classification."""
    return _digest(["route", scope, prompt, context_fp, model, params_fp])


class Prepared:
    """Everything the cache derives from one request, computed once: the fingerprints now,
    the category and unit embedding as soon as a step needs them (then reused by store)."""

    __slots__ = (
        "category",
        "context_fp",
        "core_fp",
        "deterministic",
        "model",
        "normalised",
        "params_fp",
        "query",
        "req",
        "vector",
    )

    def __init__(self, req: LookupRequest) -> None:
        self.req = req
        self.query = req.query_text
        self.normalised = normalise_prompt(self.query)
        self.context_fp = context_fingerprint(req.context)
        self.model = req.model or ""
        self.params_fp = params_fingerprint(req.params)
        self.core_fp = core_params_fingerprint(req.params)
        self.deterministic = is_deterministic(req.params)
        self.category: str | None = None
        self.vector: np.ndarray | None = req.embedding

    def exact_key(self, scope: str, category: str) -> str:
        return exact_key(
            scope=scope,
            category=category,
            prompt=self.normalised,
            context_fp=self.context_fp,
            model=self.model,
            params_fp=self.params_fp,
        )

    def route_key(self, scope: str) -> str:
        return route_key(
            scope=scope,
            prompt=self.normalised,
            context_fp=self.context_fp,
            model=self.model,
            params_fp=self.params_fp,
        )


def entry_route_key(
    *, tenant: str, shared: bool, prompt: str, context_fp: str, model: str, params_fp: str
) -> str:
    """route_key recomputed from a stored entry (start-up rebuild)."""
    return route_key(
        scope=SHARED_TENANT if shared else tenant,
        prompt=normalise_prompt(prompt),
        context_fp=context_fp,
        model=model,
        params_fp=params_fp,
    )


def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return str(value)


def _digest(obj: Any) -> str:
    data = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:_KEY_HEX]
