"""Cache service: translate protobuf <-> cache types, check the caller, delegate to SemanticCache.

Field names in errors are the API's (`query.prompt`, `policy.threshold`, ...): the cache names
its own fields and the servicer prefixes them with where they sit in the request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
import numpy as np

from cache.errors import InvalidRequest
from cache.policy import CategoryPolicy, Eviction
from cache.service import SemanticCache
from cache.types import (
    CachedResponse,
    Chunk,
    FinalResult,
    LookupRequest,
    LookupResult,
    Reason,
    ToolCall,
)
from curacache.api.v1 import cache_pb2 as pb
from curacache.api.v1 import cache_pb2_grpc
from curacache.errors import InvalidArgument, PermissionDenied
from curacache.llm.router import BackendRouter
from curacache.llm.types import ForwardHead
from curacache.server import validate
from curacache.server.gate import Gate
from curacache.server.policy_book import PolicyBook
from curacache.server.replica import Replica
from curacache.server.servicers.consistency import caught_up
from curacache.server.status import rpc, rpc_stream

log = logging.getLogger("curacache.server")

_SCALAR_PARAMS = ("temperature", "top_p", "max_tokens", "seed")
_POLICY_FIELDS = tuple(f.name for f in dataclasses.fields(CategoryPolicy))
_OPTIONAL_ZERO_IS_NONE = ("max_ttl_s", "target_false_hit_rate")
_QUERY_FIELDS = frozenset(pb.CacheQuery.DESCRIPTOR.fields_by_name)
_FLOAT32_FIELDS = frozenset(
    f.name for f in pb.CategoryPolicy.DESCRIPTOR.fields if f.type == f.TYPE_FLOAT
)


@contextmanager
def _api_fields() -> Iterator[None]:
    """Name the cache's complaints the way the API spells the field (`query.prompt`, ...)."""
    try:
        yield
    except InvalidRequest as exc:
        root = exc.field.split(".")[0].split("[")[0]
        raise InvalidArgument(
            f"query.{exc.field}" if root in _QUERY_FIELDS else exc.field, exc.message
        ) from None


class CacheServicer(cache_pb2_grpc.CacheServicer):
    def __init__(
        self,
        cache: SemanticCache,
        gate: Gate,
        *,
        policies: PolicyBook,
        dim: int,
        router: BackendRouter,
        max_forward_bytes: int,
        replica: Replica | None = None,
        log_collection: str = "",
    ) -> None:
        """`replica` and `log_collection` (the cache's collection): read-your-writes, as for
        vectors (a write answers its log position; a read may wait for one)."""
        self._replica = replica
        self._log_collection = log_collection
        self._cache = cache
        self._policies = policies
        self._gate = gate
        self._dim = dim
        self._router = router
        self._max_forward_bytes = max_forward_bytes
        self._after_reply: set[asyncio.Task[None]] = set()

    def _request(
        self, q: pb.CacheQuery, context: grpc.aio.ServicerContext, *, max_ttl_s: float = 0.0
    ) -> tuple[LookupRequest, bool]:
        """The cache request, and whether the caller may write shared entries."""
        principal = self._gate.tenant(context, q.tenant, "query.tenant")
        embedding = None
        if q.embedding:
            embedding = validate.vectors([q.embedding], self._dim, "query.embedding")[0]
            validate.nonzero_rows(embedding.reshape(1, -1), "query.embedding")
        params: dict[str, Any] = {
            name: getattr(q.params, name) for name in _SCALAR_PARAMS if q.params.HasField(name)
        }
        if q.params.stop:
            params["stop"] = list(q.params.stop)
        params.update(q.params.extra)
        params.update(_json_params(q.params.extra_json, set(q.params.extra)))
        with _api_fields():
            request = LookupRequest(
                tenant=q.tenant,
                prompt=q.prompt if q.prompt or not q.messages else None,
                messages=tuple((m.role, m.content) for m in q.messages),
                category=q.category or None,
                model=q.model or None,
                params=params,
                embedding=embedding,
                no_store=q.no_store,
                no_cache=q.no_cache,
                min_similarity=q.min_similarity or None,
                max_ttl=max_ttl_s or None,
            )
        return request, principal.manage

    @rpc
    async def Lookup(
        self, request: pb.LookupRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupResponse:
        query, _ = self._request(request.query, context)
        await caught_up(self._replica, request.min_log_position, context)
        with _api_fields():
            return _lookup_response(await self._cache.lookup(query))

    async def _position(self, wrote: bool) -> str:
        """The log position a read must reach to see this call's write ("" if none)."""
        if not wrote or self._replica is None:
            return ""
        return await self._replica.head_token(self._log_collection)

    @rpc
    async def Store(
        self, request: pb.StoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.StoreResponse:
        query, may_share = self._request(request.query, context)
        if request.shared and not may_share:
            raise PermissionDenied(
                "shared: storing entries every tenant sees needs an admin API key"
            )
        if request.ttl_s < 0:
            raise InvalidArgument("ttl_s", f"must be >= 0, got {request.ttl_s}")
        r = request.response
        with _api_fields():
            response = CachedResponse(
                text=r.text,
                finish_reason=r.finish_reason or "stop",
                usage=_usage(r.usage),
                tool_calls=tuple(ToolCall(c.id, c.name, c.arguments) for c in r.tool_calls),
            )
            result = await self._cache.store(
                query, response, ttl=request.ttl_s or None, shared=request.shared
            )
        return pb.StoreResponse(
            entry_id=result.entry_id or "",
            category=result.category,
            stored=result.stored,
            reason=str(result.reason) + (f": {result.detail}" if result.detail else ""),
            log_position=await self._position(result.stored),
        )

    async def _generation(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[LookupResult | Chunk | FinalResult]:
        """The cache's generation for `request`, once the replica has caught up as asked."""
        if request.max_ttl_s < 0 or not math.isfinite(request.max_ttl_s):
            raise InvalidArgument("max_ttl_s", f"must be >= 0 seconds, got {request.max_ttl_s}")
        query, may_share = self._request(request.query, context, max_ttl_s=request.max_ttl_s)
        if request.shared and not may_share:
            raise PermissionDenied(
                "shared: storing entries every tenant sees needs an admin API key"
            )
        await caught_up(self._replica, request.min_log_position, context)
        with _api_fields():
            return self._cache.generate(query, shared=request.shared)

    @rpc_stream
    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateChunk]:
        items = await self._generation(request, context)
        with _api_fields():
            async for item in items:
                if isinstance(item, LookupResult):
                    yield pb.GenerateChunk(start=_start(item))
                elif isinstance(item, Chunk) and item.tool_call is not None:
                    d = item.tool_call
                    yield pb.GenerateChunk(
                        tool_call=pb.ToolCallDelta(
                            index=d.index, id=d.id, name=d.name, arguments=d.arguments
                        )
                    )
                elif isinstance(item, Chunk):
                    yield pb.GenerateChunk(text=item.text)
                elif isinstance(item, FinalResult):  # the whole text (hit, lead or follower)
                    # The stream ends with this message; what follows the result (labelling,
                    # verifying a hit) runs on after it, so neither a caller that waits for
                    # the end nor one that cancels once it has the result (the gateway, the
                    # SDK's early exit) holds it up or cuts it short.
                    done = _done(item)
                    done.log_position = await self._position(done.stored)
                    self._finish_later(items)
                    yield pb.GenerateChunk(done=done)
                    return

    @rpc
    async def Complete(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteResponse:
        items = await self._generation(request, context)
        start = pb.GenerateStart()
        with _api_fields():
            async for item in items:
                if isinstance(item, LookupResult):
                    start = _start(item)
                elif isinstance(item, FinalResult):
                    # What follows the result (self-labelling a miss, verifying a hit against
                    # the backend) must not delay the reply: it runs on after it, as it does
                    # after Generate's last message.
                    done = _done(item)
                    done.log_position = await self._position(done.stored)
                    self._finish_later(items)
                    return pb.CompleteResponse(start=start, done=done)
        raise RuntimeError("the cache's generation ended without a result")

    def _finish_later(self, items: AsyncIterator[object]) -> None:
        async def drain() -> None:
            try:
                async for _ in items:
                    pass
            except Exception:  # the caller has its answer: nobody else would see this
                log.warning("finishing a generation after its reply failed", exc_info=True)

        task = asyncio.create_task(drain())
        self._after_reply.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._after_reply.discard)

    @rpc
    async def Invalidate(
        self, request: pb.InvalidateRequest, context: grpc.aio.ServicerContext
    ) -> pb.InvalidateResponse:
        self._gate.tenant(context, request.tenant)
        selectors = sum((bool(request.entry_ids), bool(request.category), request.all))
        if selectors != 1:
            raise InvalidArgument("entry_ids", "name exactly one of entry_ids, category or all")
        n = await self._cache.invalidate(
            entry_ids=list(request.entry_ids) or None,
            category=request.category or None,
            tenant=request.tenant,
        )
        return pb.InvalidateResponse(invalidated=n, log_position=await self._position(n > 0))

    @rpc
    async def Feedback(
        self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.FeedbackResponse:
        self._gate.tenant(context, request.tenant)
        if not request.entry_id:
            raise InvalidArgument("entry_id", "is required")
        category = self._cache.feedback(request.entry_id, request.correct, request.tenant)
        stats = self._cache.stats().get(category)
        return pb.FeedbackResponse(
            category=category, threshold=stats.effective_threshold if stats else 0.0
        )

    @rpc
    async def GetPolicies(
        self, request: pb.GetPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPoliciesResponse:
        self._gate.principal(context)
        return pb.GetPoliciesResponse(
            policies=[_policy_pb(c, p) for c, p in sorted(self._cache.policies().items())]
        )

    @rpc
    async def SetPolicy(
        self, request: pb.SetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetPolicyResponse:
        if not self._gate.principal(context).manage:
            raise PermissionDenied("changing cache policies needs an admin API key")
        category = request.policy.category
        if not category:
            raise InvalidArgument("policy.category", "is required")
        paths = list(request.update_mask.paths) or list(_POLICY_FIELDS)
        unknown = sorted(set(paths) - set(_POLICY_FIELDS) - {"category"})
        if unknown:
            raise InvalidArgument("update_mask", f"unknown policy field {unknown[0]!r}")
        changes = {
            name: _policy_value(name, getattr(request.policy, name))
            for name in paths
            if name != "category"
        }
        try:
            policy = await self._policies.set(category, create=request.create, changes=changes)
        except InvalidRequest as exc:
            raise InvalidArgument(f"policy.{exc.field}", exc.message) from None
        return pb.SetPolicyResponse(policy=_policy_pb(category, policy))

    @rpc
    async def Models(
        self, request: pb.ModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelsResponse:
        self._gate.principal(context)
        owners = await self._router.served_models()
        return pb.ModelsResponse(models=[pb.Model(id=m, owned_by=b) for m, b in owners.items()])

    @rpc_stream
    async def Forward(
        self, request: pb.ForwardRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ForwardChunk]:
        self._gate.tenant(context, request.tenant)
        backend_path = _FORWARD_PATHS.get(request.path)
        if backend_path is None:
            raise InvalidArgument(
                "path", f"must be one of {sorted(_FORWARD_PATHS)}, got {request.path!r}"
            )
        if len(request.body) > self._max_forward_bytes:
            raise InvalidArgument(
                "body", f"{len(request.body)} bytes is over the limit of {self._max_forward_bytes}"
            )
        model = _forward_model(request.body)
        async for item in self._router.forward(model, backend_path, request.body):
            if isinstance(item, ForwardHead):
                yield pb.ForwardChunk(
                    head=pb.ForwardHead(
                        status=item.status,
                        content_type=item.content_type,
                        retry_after=item.retry_after or "",
                    )
                )
            else:
                yield pb.ForwardChunk(data=item)

    @rpc
    async def Stats(
        self, request: pb.CacheStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CacheStatsResponse:
        principal = self._gate.principal(context)
        scope: frozenset[str] | None = principal.tenants  # None: every tenant's figures
        if request.tenant:
            self._gate.tenant(context, request.tenant)
            scope = frozenset((request.tenant,))
        rows = []
        for category, s in sorted(self._cache.stats(tenants=scope).items()):
            c = s.counters
            rows.append(
                pb.CategoryStats(
                    category=category,
                    lookups=c.lookups,
                    exact_hits=c.exact_hits,
                    semantic_hits=c.semantic_hits,
                    misses=c.misses,
                    stores=c.stores,
                    evictions=c.evictions,
                    expirations=c.expirations,
                    correct_feedback=c.correct_hits,
                    false_hit_feedback=c.false_hits,
                    entries=s.entries,
                    effective_threshold=s.effective_threshold,
                    effective_ttl_s=s.effective_ttl_s,
                    backend_load=s.load,
                    hit_rate=c.rolling_hit_rate if c.rolling_hit_rate is not None else c.hit_rate,
                    semantic_skipped=c.skipping_semantic,
                    miss_cost_ms=c.miss_path_ms or 0.0,
                )
            )
        return pb.CacheStatsResponse(categories=rows)


_FORWARD_PATHS = {"/v1/chat/completions": "/chat/completions", "/v1/completions": "/completions"}


def _forward_model(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        raise InvalidArgument("body", "is not valid JSON") from None
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, str) or not model:
        raise InvalidArgument("body.model", "is required (a string)")
    return model


def _json_params(extra_json: Mapping[str, str], plain: set[str]) -> dict[str, Any]:
    """`params.extra_json`: backend parameters whose values are JSON (numbers, objects)."""
    params: dict[str, Any] = {}
    for key, text in extra_json.items():
        field = f"query.params.extra_json[{key!r}]"
        if key in plain:
            raise InvalidArgument(field, "is also in params.extra; send each parameter once")
        try:
            params[key] = json.loads(text)
        except ValueError:
            raise InvalidArgument(field, f"is not valid JSON: {text[:80]!r}") from None
    return params


def _start(r: LookupResult) -> pb.GenerateStart:
    return pb.GenerateStart(
        cached=r.hit,
        similarity=r.similarity or 0.0,
        category=r.category or "",
        entry_id=r.entry_id or "",
        reason=str(r.reason),
        threshold=r.threshold or 0.0,
        cacheable=r.reason not in (Reason.NONDETERMINISTIC, Reason.DISABLED),
    )


def _usage(u: pb.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def _response_pb(r: CachedResponse) -> pb.CachedResponse:
    u: Mapping[str, int] = r.usage
    return pb.CachedResponse(
        text=r.text,
        finish_reason=r.finish_reason,
        usage=pb.Usage(
            prompt_tokens=u.get("prompt_tokens", 0),
            completion_tokens=u.get("completion_tokens", 0),
            total_tokens=u.get("total_tokens", 0),
        ),
        tool_calls=[pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in r.tool_calls],
    )


def _lookup_response(r: LookupResult) -> pb.LookupResponse:
    return pb.LookupResponse(
        hit=r.hit,
        response=_response_pb(r.response) if r.response is not None else None,
        similarity=r.similarity or 0.0,
        category=r.category or "",
        entry_id=r.entry_id or "",
        reason=str(r.reason) + (f": {r.detail}" if r.detail else ""),
        threshold=r.threshold or 0.0,
    )


def _done(f: FinalResult) -> pb.GenerateDone:
    response = CachedResponse(
        text=f.text, finish_reason=f.finish_reason, usage=f.usage, tool_calls=f.tool_calls
    )
    return pb.GenerateDone(
        cached=f.cached,
        response=_response_pb(response),
        similarity=f.similarity or 0.0,
        category=f.category or "",
        entry_id=f.entry_id or "",
        reason=str(f.lookup_reason or ""),
        stored=str(f.store_reason or "") == "stored",
    )


def _policy_value(name: str, value: Any) -> Any:
    if name in _OPTIONAL_ZERO_IS_NONE and not value:
        return None
    if name in _FLOAT32_FIELDS:
        # The wire carries float32: 0.9 arrives as 0.8999999761581421. The shortest decimal
        # that maps to the same float32 is what the user typed.
        return float(str(np.float32(value)))
    if name == "eviction":
        try:
            return Eviction(value)
        except ValueError:
            raise InvalidArgument(
                "policy.eviction", f"must be one of {[e.value for e in Eviction]}, got {value!r}"
            ) from None
    return value


def _policy_pb(category: str, p: CategoryPolicy) -> pb.CategoryPolicy:
    values = {name: getattr(p, name) for name in _POLICY_FIELDS}
    values["eviction"] = str(p.eviction)
    for name in _OPTIONAL_ZERO_IS_NONE:
        values[name] = values[name] or 0.0
    return pb.CategoryPolicy(category=category, **values)
