"""Typed results of the SDK's cache calls (plain frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for; `arguments` is JSON text as the model wrote it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call on a streamed miss (`generate_events`): the first piece of call
    `index` carries its id and name, later ones append to its arguments."""

    index: int
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """`tool_calls`: the functions the model called (then `finish_reason` is "tool_calls")."""

    text: str
    finish_reason: str = "stop"
    usage: Usage = Usage()
    model: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class LookupResult:
    """`reason` says why it hit or missed (exact, semantic, below_threshold, expired, ...)."""

    hit: bool
    response: CachedResponse | None
    similarity: float
    category: str
    entry_id: str
    reason: str
    threshold: float


@dataclass(frozen=True, slots=True)
class StoreResult:
    entry_id: str
    category: str
    stored: bool
    reason: str
    log_position: str = ""  # pass as a lookup's min_log_position on another replica


@dataclass(frozen=True, slots=True)
class GenerateStart:
    """The first item `generate_events` yields: the lookup's outcome, before any text.

    `cacheable` is False when the policy keeps the request out of the cache entirely (it
    samples and the category does not cache sampled answers, or the category is disabled)."""

    cached: bool
    similarity: float
    category: str
    entry_id: str
    reason: str
    threshold: float
    cacheable: bool


@dataclass(frozen=True, slots=True)
class GenerateResult:
    """The last item `generate` yields, after the text chunks."""

    cached: bool
    response: CachedResponse
    similarity: float
    category: str
    entry_id: str
    reason: str
    stored: bool
    log_position: str = ""  # when stored: as in StoreResult


@dataclass(frozen=True, slots=True)
class CategoryPolicy:
    category: str
    threshold: float
    ttl_s: float
    quota_per_tenant: int
    quota_total: int
    eviction: str
    enabled: bool
    strict: bool
    min_threshold: float
    max_ttl_s: float
    relax: float
    extend: float
    cache_nondeterministic: bool
    allow_truncated: bool
    target_false_hit_rate: float


@dataclass(frozen=True, slots=True)
class CategoryStats:
    category: str
    lookups: int
    exact_hits: int
    semantic_hits: int
    misses: int
    stores: int
    evictions: int
    expirations: int
    correct_feedback: int
    false_hit_feedback: int
    entries: int
    effective_threshold: float
    effective_ttl_s: float
    backend_load: float
    hit_rate: float
    semantic_skipped: bool
    miss_cost_ms: float


@dataclass(frozen=True, slots=True)
class Model:
    """A model some LLM backend of the service serves; `owned_by` names that backend."""

    id: str
    owned_by: str


@dataclass(frozen=True, slots=True)
class ForwardHead:
    """First item of `forward`: the backend's status line; its body bytes follow."""

    status: int
    content_type: str
    retry_after: str | None
