"""The one place where exceptions become gRPC status codes (never UNKNOWN)."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from cache import errors as cache_errors
from curacache import errors
from curacache.llm.errors import BackendError
from storage.errors import CollectionExists, CollectionMissing, StoreUnavailable

log = logging.getLogger("curacache.server")

_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (CollectionMissing, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (CollectionExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.WrongGroup, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (cache_errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (cache_errors.EntryNotFound, grpc.StatusCode.NOT_FOUND),
    (cache_errors.NotPermitted, grpc.StatusCode.PERMISSION_DENIED),
    (cache_errors.CorruptEntry, grpc.StatusCode.DATA_LOSS),
)


GROUP_KEY = "curacache-group"
"""Trailing metadata of a request sent to the wrong replica group: the group that serves the
collection (and REPLICA_GROUP_KEY: this replica's), so a client can route by collection."""
REPLICA_GROUP_KEY = "curacache-replica-group"

ERROR_SOURCE_KEY = "curacache-error-source"
"""Trailing metadata naming where a failure came from: "backend" for an LLM backend's, so a
gateway can tell a backend that is down (502) or overloaded (503) from the service itself."""


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """Status code, message and trailing metadata for an exception."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            trailers: tuple[tuple[str, str], ...] = ()
            if isinstance(exc, errors.ResourceExhausted):
                trailers = (("retry-after", str(max(1, math.ceil(exc.retry_after)))),)
            if isinstance(exc, errors.WrongGroup):
                trailers = ((GROUP_KEY, exc.group), (REPLICA_GROUP_KEY, exc.here))
            if isinstance(exc, BackendError):
                trailers += ((ERROR_SOURCE_KEY, "backend"),)
            return code, str(exc), trailers
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}", ()


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def rpc(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Wrap a unary servicer method so any exception leaves as the right status code."""

    @functools.wraps(method)
    async def handler(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, message, trailers = status_for(exc)
            await context.abort(code, message, trailers)
            raise AssertionError("unreachable") from exc  # abort always raises

    return handler


StreamHandler = Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]


def rpc_stream(method: StreamHandler[Req, Resp]) -> StreamHandler[Req, Resp]:
    """`rpc` for server-streaming methods: an exception, before or after the first message,
    ends the stream with the right status code."""

    @functools.wraps(method)
    async def handler(
        self: Any, request: Req, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Resp]:
        try:
            async for message in method(self, request, context):
                yield message
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, message_text, trailers = status_for(exc)
            await context.abort(code, message_text, trailers)

    return handler
