"""The SDK's semantic-cache calls, mixed into AsyncClient (one implementation; Client wraps it).

`prompt` is either a string (completions) or a chat conversation: a list of
`{"role": ..., "content": ...}` mappings or `(role, content)` pairs. `params` are generation
parameters (temperature, top_p, max_tokens, seed, stop; anything else travels verbatim) and
take part in the fingerprint: a cached response is served only for the same model and params.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf import field_mask_pb2

from curacache.api.v1 import cache_pb2 as pb
from curacache.client.cache_types import (
    CachedResponse,
    CategoryPolicy,
    CategoryStats,
    ForwardHead,
    GenerateResult,
    GenerateStart,
    LookupResult,
    Model,
    StoreResult,
    ToolCall,
    ToolCallDelta,
    Usage,
)

Prompt = str | Sequence[Mapping[str, str]] | Sequence[tuple[str, str]]
_PARAM_FIELDS = ("temperature", "top_p", "max_tokens", "seed")
_POLICY_FIELDS = tuple(f.name for f in dataclasses.fields(CategoryPolicy))
# Where the client keeps its last cache write's log position, next to its collections' (no
# collection name contains a colon).
CACHE_LOG = "cache:"


class CacheCalls:
    """Cache RPCs, mixed into AsyncClient, which provides `_call` and `_stream`."""

    _call: Any
    _stream: Any
    _wrote: Any
    _min_position: Any
    log_position: Any

    def cache_log_position(self) -> str:
        """The change-log position of this client's last cache write ("" if none): pass it as
        `min_log_position` to look it up on any replica, from any client."""
        return str(self.log_position(CACHE_LOG))

    async def lookup(
        self,
        prompt: Prompt,
        tenant: str,
        category: str | None = None,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        embedding: np.ndarray | Sequence[float] | None = None,
        *,
        min_similarity: float | None = None,
        min_log_position: str = "",
    ) -> LookupResult:
        """Look `prompt` up in `tenant`'s cache (its private entries and shared ones).
        `min_similarity` may only make the lookup stricter than the category's threshold.
        `min_log_position` (a cache write's `log_position`): answer only once the serving
        replica has applied that write (UNAVAILABLE, and the next replica, if it cannot in
        time); with `consistency="read_your_writes"` this client's last cache write's."""
        query = _query(prompt, tenant, category, model, params, embedding)
        query.min_similarity = min_similarity or 0.0
        request = pb.LookupRequest(
            query=query, min_log_position=self._min_position(CACHE_LOG, min_log_position)
        )
        r = await self._call("cache", "Lookup", request)
        return LookupResult(
            hit=r.hit,
            response=_response(r.response) if r.hit else None,
            similarity=r.similarity,
            category=r.category,
            entry_id=r.entry_id,
            reason=r.reason,
            threshold=r.threshold,
        )

    async def store(
        self,
        prompt: Prompt,
        response: str | CachedResponse,
        tenant: str,
        category: str | None = None,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        embedding: np.ndarray | Sequence[float] | None = None,
        ttl: float | None = None,
        shared: bool = False,
    ) -> StoreResult:
        """Store a response; `shared` makes it visible to every tenant. Admission may refuse it."""
        if isinstance(response, str):
            response = CachedResponse(response)
        request = pb.StoreRequest(
            query=_query(prompt, tenant, category, model, params, embedding),
            response=_response_pb(response),
            ttl_s=ttl or 0.0,
            shared=shared,
        )
        r = await self._call("cache", "Store", request)
        self._wrote(CACHE_LOG, r.log_position)
        return StoreResult(r.entry_id, r.category, r.stored, r.reason, r.log_position)

    async def generate(
        self,
        prompt: Prompt,
        tenant: str,
        category: str | None = None,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        embedding: np.ndarray | Sequence[float] | None = None,
        *,
        shared: bool = False,
        no_store: bool = False,
        no_cache: bool = False,
        min_similarity: float | None = None,
        max_ttl: float | None = None,
        min_log_position: str = "",
    ) -> AsyncGenerator[str | GenerateResult, None]:
        """Yield the response text in chunks, then one GenerateResult (`cached` tells a hit).

        `min_similarity` may only make the lookup stricter than the category's threshold;
        `max_ttl` caps how long the response is stored (seconds)."""
        events = self.generate_events(
            prompt,
            tenant,
            category,
            model,
            params,
            embedding,
            shared=shared,
            no_store=no_store,
            no_cache=no_cache,
            min_similarity=min_similarity,
            max_ttl=max_ttl,
            min_log_position=min_log_position,
        )
        async with contextlib.aclosing(events):
            async for item in events:
                if not isinstance(item, (GenerateStart, ToolCallDelta)):
                    yield item  # tool calls come whole in the GenerateResult

    async def generate_events(
        self,
        prompt: Prompt,
        tenant: str,
        category: str | None = None,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        embedding: np.ndarray | Sequence[float] | None = None,
        *,
        shared: bool = False,
        no_store: bool = False,
        no_cache: bool = False,
        min_similarity: float | None = None,
        max_ttl: float | None = None,
        min_log_position: str = "",
    ) -> AsyncGenerator[GenerateStart | str | ToolCallDelta | GenerateResult, None]:
        """`generate`, opening with a GenerateStart: hit or miss is known before any text. On a
        miss whose backend streams tool calls their pieces come as ToolCallDelta as they arrive
        (a replay sends none: the whole calls are in the GenerateResult)."""
        request = self._generate_request(
            prompt,
            tenant,
            category,
            model,
            params,
            embedding,
            shared=shared,
            no_store=no_store,
            no_cache=no_cache,
            min_similarity=min_similarity,
            max_ttl=max_ttl,
            min_log_position=min_log_position,
        )
        async for chunk in self._stream("cache", "Generate", request):
            kind = chunk.WhichOneof("kind")
            if kind == "text":
                yield chunk.text
            elif kind == "tool_call":
                d = chunk.tool_call
                yield ToolCallDelta(d.index, d.id, d.name, d.arguments)
            elif kind == "start":
                yield _start(chunk.start)
            else:
                self._wrote(CACHE_LOG, chunk.done.log_position)
                yield _result(chunk.done)

    async def complete(
        self,
        prompt: Prompt,
        tenant: str,
        category: str | None = None,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        embedding: np.ndarray | Sequence[float] | None = None,
        *,
        shared: bool = False,
        no_store: bool = False,
        no_cache: bool = False,
        min_similarity: float | None = None,
        max_ttl: float | None = None,
        min_log_position: str = "",
    ) -> tuple[GenerateStart, GenerateResult]:
        """`generate` without streaming: the lookup's outcome and the whole result at once.
        On a miss `GenerateResult.entry_id` is the entry the response was stored under ("" when
        it was not stored); the GenerateStart's is the nearest candidate's."""
        request = self._generate_request(
            prompt,
            tenant,
            category,
            model,
            params,
            embedding,
            shared=shared,
            no_store=no_store,
            no_cache=no_cache,
            min_similarity=min_similarity,
            max_ttl=max_ttl,
            min_log_position=min_log_position,
        )
        r = await self._call("cache", "Complete", request)
        self._wrote(CACHE_LOG, r.done.log_position)
        return _start(r.start), _result(r.done)

    def _generate_request(
        self,
        prompt: Prompt,
        tenant: str,
        category: str | None,
        model: str | None,
        params: Mapping[str, Any] | None,
        embedding: np.ndarray | Sequence[float] | None,
        *,
        shared: bool,
        no_store: bool,
        no_cache: bool,
        min_similarity: float | None,
        max_ttl: float | None,
        min_log_position: str,
    ) -> pb.GenerateRequest:
        """The request of Generate and Complete (one shape, one read-your-writes rule)."""
        query = _query(
            prompt, tenant, category, model, params, embedding, no_store=no_store, no_cache=no_cache
        )
        query.min_similarity = min_similarity or 0.0
        return pb.GenerateRequest(
            query=query,
            shared=shared,
            max_ttl_s=max_ttl or 0.0,
            min_log_position=self._min_position(CACHE_LOG, min_log_position),
        )

    async def models(self) -> list[Model]:
        """The models the service's LLM backends serve."""
        r = await self._call("cache", "Models", pb.ModelsRequest())
        return [Model(m.id, m.owned_by) for m in r.models]

    async def forward(
        self, path: str, body: bytes, tenant: str
    ) -> AsyncGenerator[ForwardHead | bytes, None]:
        """Send an OpenAI request body untouched to the backend serving its model (no caching):
        yields the backend's ForwardHead, then its response body as it arrives."""
        request = pb.ForwardRequest(tenant=tenant, path=path, body=body)
        async for chunk in self._stream("cache", "Forward", request):
            if chunk.WhichOneof("kind") == "head":
                h = chunk.head
                yield ForwardHead(h.status, h.content_type, h.retry_after or None)
            else:
                yield chunk.data

    async def invalidate(
        self,
        tenant: str,
        entry_ids: Sequence[str] | None = None,
        category: str | None = None,
        all: bool = False,
    ) -> int:
        """Remove entries by id, by category, or all of `tenant`'s; returns how many."""
        request = pb.InvalidateRequest(
            tenant=tenant, entry_ids=entry_ids or [], category=category or "", all=all
        )
        r = await self._call("cache", "Invalidate", request)
        self._wrote(CACHE_LOG, r.log_position)
        return int(r.invalidated)

    async def feedback(
        self, entry_id: str, correct: bool, tenant: str, similarity: float | None = None
    ) -> float:
        """Report whether a hit was right; returns the category's threshold afterwards."""
        request = pb.FeedbackRequest(
            tenant=tenant, entry_id=entry_id, correct=correct, similarity=similarity or 0.0
        )
        return float((await self._call("cache", "Feedback", request)).threshold)

    async def get_policies(self) -> list[CategoryPolicy]:
        r = await self._call("cache", "GetPolicies", pb.GetPoliciesRequest())
        return [_policy(p) for p in r.policies]

    async def set_policy(
        self, category: str, *, create: bool = False, **changes: Any
    ) -> CategoryPolicy:
        """Change some fields of one category's policy (e.g. threshold=0.9, ttl_s=600).
        An unknown category is refused unless `create=True`."""
        unknown = sorted(set(changes) - set(_POLICY_FIELDS) - {"category"})
        if unknown:
            raise ValueError(
                f"{unknown[0]}: not a policy field (fields: {', '.join(_POLICY_FIELDS[1:])})"
            )
        request = pb.SetPolicyRequest(
            policy=pb.CategoryPolicy(category=category, **changes),
            update_mask=field_mask_pb2.FieldMask(paths=sorted(changes)),
            create=create,
        )
        return _policy((await self._call("cache", "SetPolicy", request)).policy)

    async def cache_stats(self, tenant: str | None = None) -> list[CategoryStats]:
        """Per-category counters: every tenant's with an admin key, else the key's own tenants'
        (`tenant` narrows to one of them)."""
        r = await self._call("cache", "Stats", pb.CacheStatsRequest(tenant=tenant or ""))
        names = [f.name for f in dataclasses.fields(CategoryStats)]
        return [CategoryStats(**{n: getattr(s, n) for n in names}) for s in r.categories]


def _query(
    prompt: Prompt,
    tenant: str,
    category: str | None,
    model: str | None,
    params: Mapping[str, Any] | None,
    embedding: np.ndarray | Sequence[float] | None,
    *,
    no_store: bool = False,
    no_cache: bool = False,
) -> pb.CacheQuery:
    q = pb.CacheQuery(
        tenant=tenant,
        category=category or "",
        model=model or "",
        no_store=no_store,
        no_cache=no_cache,
    )
    if isinstance(prompt, str):
        q.prompt = prompt
    else:
        for m in prompt:
            role, content = (m["role"], m["content"]) if isinstance(m, Mapping) else m
            q.messages.add(role=role, content=content)
    if params:
        p = q.params
        for key, value in params.items():
            if key in _PARAM_FIELDS:
                setattr(p, key, value)
            elif key == "stop":
                p.stop.extend([value] if isinstance(value, str) else value)
            elif isinstance(value, str):
                p.extra[key] = value
            else:  # numbers, booleans, objects: sent as JSON so the backend gets their type
                p.extra_json[key] = json.dumps(value)
    if embedding is not None:
        q.embedding = np.ascontiguousarray(embedding, dtype="<f4").ravel().tobytes()
    return q


def _response_pb(r: CachedResponse) -> pb.CachedResponse:
    u = r.usage
    return pb.CachedResponse(
        text=r.text,
        finish_reason=r.finish_reason,
        model=r.model,
        usage=pb.Usage(
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            total_tokens=u.total_tokens,
        ),
        tool_calls=[pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in r.tool_calls],
    )


def _response(r: pb.CachedResponse) -> CachedResponse:
    u = r.usage
    return CachedResponse(
        r.text,
        r.finish_reason,
        Usage(u.prompt_tokens, u.completion_tokens, u.total_tokens),
        r.model,
        tuple(ToolCall(c.id, c.name, c.arguments) for c in r.tool_calls),
    )


def _start(s: pb.GenerateStart) -> GenerateStart:
    return GenerateStart(
        s.cached, s.similarity, s.category, s.entry_id, s.reason, s.threshold, s.cacheable
    )


def _result(d: pb.GenerateDone) -> GenerateResult:
    return GenerateResult(
        d.cached,
        _response(d.response),
        d.similarity,
        d.category,
        d.entry_id,
        d.reason,
        d.stored,
        d.log_position,
    )


def _policy(p: pb.CategoryPolicy) -> CategoryPolicy:
    return CategoryPolicy(**{name: _decimal(p, name) for name in _POLICY_FIELDS})


def _decimal(p: pb.CategoryPolicy, name: str) -> Any:
    """float32 fields as the shortest decimal of the same float32 (0.9, not 0.8999999761581421)."""
    value = getattr(p, name)
    if p.DESCRIPTOR.fields_by_name[name].type == p.DESCRIPTOR.fields_by_name[name].TYPE_FLOAT:
        return float(str(np.float32(value)))
    return value
