"""Value types of the semantic cache: entries, requests, results, stream items.

All of them are frozen so one request can be fingerprinted, looked up, single-flighted and
sent to the backend without anyone mutating it underneath the others. Requests validate
themselves on construction and raise `InvalidRequest` naming the offending field, so bad input
never reaches a repository or the backend.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np

from cache.errors import CorruptEntry, InvalidRequest

SHARED_TENANT = "*"
"""Reserved tenant name: the scope of shared entries. No request may use it as its tenant.

A repository implements shared visibility by putting this name on a shared entry's access list
and covering it in every search (see `cache.ports.EntryRepository.search`)."""

MAX_TENANT_BYTES = 256
_PARAM_SCALARS = (str, int, float, bool, type(None))

Message = tuple[str, str]
"""(role, content) of one chat turn."""


class Reason(StrEnum):
    """Why a lookup hit or missed; surfaced to users (X-Cache headers, Lookup replies)."""

    EXACT = "exact"
    SEMANTIC = "semantic"
    BELOW_THRESHOLD = "below_threshold"
    EXPIRED = "expired"
    FINGERPRINT_MISMATCH = "fingerprint_mismatch"
    DISABLED = "disabled"
    BREAK_EVEN_SKIP = "break_even_skip"
    EMPTY = "empty"
    NO_CACHE = "no_cache"
    SINGLE_FLIGHT = "single_flight"  # a miss served by another request's in-flight backend call
    NONDETERMINISTIC = (
        "nondeterministic"  # samples, and the category does not cache sampled answers
    )


class StoreReason(StrEnum):
    """Why a response was stored or refused (admission, DESIGN §5)."""

    STORED = "stored"
    DISABLED = "disabled"
    NO_STORE = "no_store"
    NONDETERMINISTIC = "nondeterministic"
    ERROR = "error"
    EMPTY = "empty"
    TRUNCATED = "truncated"
    TOO_LARGE = "too_large"  # a generated response above max_response_bytes (delivered, not stored)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for instead of (or with) text; `arguments` is the JSON
    text exactly as the backend produced it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CachedResponse:
    """What a hit returns: the text exactly as the backend produced it, plus its metadata
    (`tool_calls`: the functions the model called, when it did)."""

    text: str
    finish_reason: str
    usage: Mapping[str, int] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise InvalidRequest("response.text", "must be a string")
        if not isinstance(self.finish_reason, str):
            raise InvalidRequest("response.finish_reason", "must be a string")
        object.__setattr__(self, "usage", _usage(self.usage, "response.usage"))
        object.__setattr__(self, "tool_calls", _tool_calls(self.tool_calls, "response.tool_calls"))


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheEntry:
    """One cached response: the payload of a record in the category's collection (DESIGN §2).

    `entry_id` is the exact-path key (see `cache.fingerprint.exact_key`), so the exact fast path
    is a plain get by id. `hits`/`last_hit_at` are as of the last put; live counts are kept in
    memory by the service (see `cache.ledger`).
    """

    entry_id: str
    category: str
    tenant: str
    shared: bool
    prompt: str
    context_fp: str
    model: str
    params_fp: str
    core_params_fp: str  # params fingerprint without sampling knobs (cache_nondeterministic)
    response_text: str
    finish_reason: str
    usage: Mapping[str, int] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()
    created_at: float
    expires_at: float
    hits: int = 0
    last_hit_at: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "usage", _usage(self.usage, "usage"))
        object.__setattr__(self, "tool_calls", _tool_calls(self.tool_calls, "tool_calls"))

    @property
    def response(self) -> CachedResponse:
        return CachedResponse(
            text=self.response_text,
            finish_reason=self.finish_reason,
            usage=self.usage,
            tool_calls=self.tool_calls,
        )

    def visible_to(self, tenant: str) -> bool:
        """The rule every read path applies, even to what a repository returns."""
        return self.shared or self.tenant == tenant

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def access_list(self) -> tuple[str, ...]:
        """The record's `tenants` list in the vector collection: owner, plus `*` when shared."""
        return (self.tenant, SHARED_TENANT) if self.shared else (self.tenant,)

    def metadata(self) -> dict[str, str]:
        """String map for the record's metadata (lets a store expire it, e.g. Redis TTL)."""
        return {
            "category": self.category,
            "tenant": self.tenant,
            "shared": "1" if self.shared else "0",
            "model": self.model,
            "created_at": repr(self.created_at),
            "expires_at": repr(self.expires_at),
        }

    def to_bytes(self) -> bytes:
        """JSON payload for the document store (versioned so the format can evolve)."""
        doc = {
            "v": 1,
            "entry_id": self.entry_id,
            "category": self.category,
            "tenant": self.tenant,
            "shared": self.shared,
            "prompt": self.prompt,
            "context_fp": self.context_fp,
            "model": self.model,
            "params_fp": self.params_fp,
            "core_params_fp": self.core_params_fp,
            "response_text": self.response_text,
            "finish_reason": self.finish_reason,
            "usage": dict(self.usage),
            "tool_calls": [[c.id, c.name, c.arguments] for c in self.tool_calls],
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "hits": self.hits,
            "last_hit_at": self.last_hit_at,
        }
        return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> CacheEntry:
        try:
            doc = json.loads(data)
            if doc.pop("v") != 1:
                raise ValueError("unknown payload version")
            return cls(**doc)
        except (ValueError, TypeError, KeyError, InvalidRequest) as exc:
            raise CorruptEntry(f"cannot decode cache entry: {exc}") from exc


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class LookupRequest:
    """A prompt (`prompt`) or a conversation (`messages`), exactly one of them.

    For a conversation the *last user turn* is what gets embedded and searched; every other
    message (system prompt, earlier turns, tool results) forms the context fingerprint, which
    must match exactly for a hit, so "And in Germany?" after two different conversations never
    collides. `params` are the generation parameters (temperature, top_p, max_tokens, seed,
    stop, ...), passed to the backend and fingerprinted. `embedding`, if sent, replaces the
    embedding step. `no_cache` skips the lookup, `no_store` the store (Cache-Control).
    """

    tenant: str
    prompt: str | None = None
    messages: Sequence[Message] = ()
    category: str | None = None
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    no_store: bool = False
    no_cache: bool = False
    min_similarity: float | None = None
    max_ttl: float | None = None

    def __post_init__(self) -> None:
        _check_tenant(self.tenant)
        if self.prompt is not None and self.messages:
            raise InvalidRequest("prompt", "send a prompt or messages, not both")
        if self.prompt is None and not self.messages:
            raise InvalidRequest("prompt", "send a prompt or messages")
        if self.prompt is not None and (
            not isinstance(self.prompt, str) or not self.prompt.strip()
        ):
            raise InvalidRequest("prompt", "must be a non-empty string")
        object.__setattr__(self, "messages", _messages(self.messages))
        if self.category is not None and (not isinstance(self.category, str) or not self.category):
            raise InvalidRequest("category", "must be a non-empty string when set")
        if self.model is not None and not isinstance(self.model, str):
            raise InvalidRequest("model", "must be a string")
        object.__setattr__(self, "params", _params(self.params))
        if self.embedding is not None:
            object.__setattr__(self, "embedding", _embedding(self.embedding))
        for name in ("no_store", "no_cache"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidRequest(name, "must be a boolean")
        if self.min_similarity is not None and not _number_in(self.min_similarity, 0.0, 1.0):
            raise InvalidRequest(
                "min_similarity", f"must be a number in [0, 1], got {self.min_similarity!r}"
            )
        if self.max_ttl is not None and not _number_in(self.max_ttl, 0.0, math.inf, low_open=True):
            raise InvalidRequest(
                "max_ttl", f"must be a positive number of seconds, got {self.max_ttl!r}"
            )

    @property
    def query_text(self) -> str:
        """The text that is embedded and normalised: the prompt, or the last user turn."""
        if self.prompt is not None:
            return self.prompt
        return self.messages[self._last_user()][1]

    @property
    def context(self) -> tuple[Message, ...]:
        """Every message except the last user turn (empty for a plain prompt)."""
        if self.prompt is not None:
            return ()
        i = self._last_user()
        return tuple(self.messages[:i]) + tuple(self.messages[i + 1 :])

    def _last_user(self) -> int:
        return max(i for i, (role, _) in enumerate(self.messages) if role == "user")


@dataclass(frozen=True, kw_only=True, slots=True)
class LookupResult:
    """Hit or miss, and why: `reason` is a code, `detail` a sentence for humans
    (e.g. "similarity 0.8712 < threshold 0.8800")."""

    hit: bool
    reason: Reason
    detail: str = ""
    response: CachedResponse | None = None
    similarity: float | None = None
    threshold: float | None = None
    category: str | None = None
    entry_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreResult:
    entry_id: str | None
    category: str
    stored: bool
    reason: StoreReason
    detail: str = ""
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call as the backend streams it: the first piece of call `index`
    carries its id and name, later ones append to its arguments."""

    index: int
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Chunk:
    """A piece of generated text; the concatenation of a stream's chunks is the response.
    With `tool_call` set (and `text` "") it is a piece of a tool call a backend streams; the
    whole calls are in the FinalResult (replays send only those)."""

    text: str
    tool_call: ToolCallDelta | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class FinalResult:
    """Last item of a stream. A backend sets text (may be "" when it streamed chunks),
    finish_reason and usage; the cache fills in the rest before passing it on."""

    text: str = ""
    finish_reason: str = "stop"
    usage: Mapping[str, int] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()
    cached: bool = False
    similarity: float | None = None
    category: str | None = None
    entry_id: str | None = None
    lookup_reason: Reason | None = None
    store_reason: StoreReason | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "usage", _usage(self.usage, "usage"))


def _tool_calls(calls: object, name: str) -> tuple[ToolCall, ...]:
    """ToolCalls, or (from a stored entry's JSON) [id, name, arguments] triples."""
    if not isinstance(calls, (tuple, list)):
        raise InvalidRequest(name, "must be a list of tool calls")
    out = []
    for i, call in enumerate(calls):
        if isinstance(call, (tuple, list)) and len(call) == 3:
            call = ToolCall(*call)
        if not isinstance(call, ToolCall) or not all(
            isinstance(v, str) for v in (call.id, call.name, call.arguments)
        ):
            raise InvalidRequest(f"{name}[{i}]", "must be a ToolCall of strings")
        if not call.name:
            raise InvalidRequest(f"{name}[{i}].name", "must not be empty")
        out.append(call)
    return tuple(out)


def _number_in(value: object, low: float, high: float, *, low_open: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return (low < value if low_open else low <= value) and value <= high


def _check_tenant(tenant: object) -> None:
    if not isinstance(tenant, str) or not tenant:
        raise InvalidRequest("tenant", "must be a non-empty string")
    if tenant == SHARED_TENANT:
        raise InvalidRequest("tenant", f"{SHARED_TENANT!r} is reserved for shared entries")
    if len(tenant.encode()) > MAX_TENANT_BYTES:
        raise InvalidRequest("tenant", f"longer than {MAX_TENANT_BYTES} bytes")


def _messages(messages: Sequence[Message]) -> tuple[Message, ...]:
    if isinstance(messages, (str, bytes)):
        raise InvalidRequest("messages", "must be a list of (role, content) pairs")
    out = []
    for i, item in enumerate(messages):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InvalidRequest(f"messages[{i}]", "must be a (role, content) pair")
        role, content = item
        if not isinstance(role, str) or not role:
            raise InvalidRequest(f"messages[{i}].role", "must be a non-empty string")
        if not isinstance(content, str):
            raise InvalidRequest(f"messages[{i}].content", "must be a string")
        out.append((role, content))
    if out:
        users = [i for i, (role, _) in enumerate(out) if role == "user"]
        if not users:
            raise InvalidRequest("messages", "needs at least one user turn")
        if not out[users[-1]][1].strip():
            raise InvalidRequest(f"messages[{users[-1]}].content", "the last user turn is empty")
    return tuple(out)


def _params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(params, Mapping):
        raise InvalidRequest("params", "must be a mapping")
    out: dict[str, Any] = {}
    for key, value in params.items():
        if not isinstance(key, str) or not key:
            raise InvalidRequest("params", "keys must be non-empty strings")
        out[key] = _param_value(f"params.{key}", value)
    _check_known_params(out)
    return MappingProxyType(out)


def _param_value(name: str, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(name, "must be finite")
    if isinstance(value, _PARAM_SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_param_value(name, v) for v in value)
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _param_value(name, v) for k, v in value.items()})
    raise InvalidRequest(name, f"unsupported value type {type(value).__name__}")


def _number(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"params.{key}", "must be a number")
    return float(value)


def _check_known_params(params: Mapping[str, Any]) -> None:
    temperature = _number(params, "temperature")
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise InvalidRequest("params.temperature", "must be in [0, 2]")
    top_p = _number(params, "top_p")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidRequest("params.top_p", "must be in (0, 1]")
    for key in ("max_tokens", "seed"):
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequest(f"params.{key}", "must be an integer")
    if params.get("max_tokens") is not None and params["max_tokens"] <= 0:
        raise InvalidRequest("params.max_tokens", "must be positive")
    stop = params.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and (not isinstance(stop, tuple) or not all(isinstance(s, str) for s in stop))
    ):
        raise InvalidRequest("params.stop", "must be a string or a list of strings")


def _embedding(embedding: Any) -> np.ndarray:
    try:
        vec = np.array(embedding, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("embedding", f"not a float vector: {exc}") from exc
    if vec.ndim != 1 or vec.size == 0:
        raise InvalidRequest("embedding", "must be a non-empty 1-d vector")
    if not np.all(np.isfinite(vec)):
        raise InvalidRequest("embedding", "contains NaN or Inf")
    norm = float(np.linalg.norm(vec))
    if norm == 0.0:
        raise InvalidRequest("embedding", "is the zero vector")
    vec /= norm  # cosine similarity: searches compare unit vectors
    vec.flags.writeable = False
    return vec


def _usage(usage: Mapping[str, int], name: str) -> Mapping[str, int]:
    if not isinstance(usage, Mapping):
        raise InvalidRequest(name, "must be a mapping of token counts")
    out = {}
    for key, value in usage.items():
        if (
            not isinstance(key, str)
            or isinstance(value, bool)
            or not isinstance(value, int)
            or value < 0
        ):
            raise InvalidRequest(name, f"{key!r} must be a non-negative integer")
        out[key] = value
    return MappingProxyType(out)
