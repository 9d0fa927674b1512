"""The one place where failures become HTTP statuses and OpenAI's error JSON.

`{"error": {"message", "type", "param", "code"}}`, with the status OpenAI clients act on:
400 bad request (the message names the field), 401 unknown or missing key (checked by the
gateway), 403 a tenant the gateway's service key may not act for, 404 unknown
model, 413 body too large, 429 rate limited (Retry-After), 502 backend failed, 503 backend
overloaded or service unreachable (Retry-After), 504 timeout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import grpc

from curacache.client import CuracacheError, ResourceExhaustedError
from curacache.gateway.wire import BadRequest

_RETRY_AFTER_UNAVAILABLE_S = 1  # the gateway reconnects within about a second


@dataclass(frozen=True, slots=True)
class HttpError(Exception):
    """A response the gateway sends instead of an answer."""

    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    retry_after: int | None = None

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def bad_request(param: str, message: str) -> HttpError:
    return HttpError(400, f"{param}: {message}", "invalid_request_error", param=param)


def http_error(exc: BaseException) -> HttpError:
    """The HTTP error for an exception raised while serving a request."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, BadRequest):
        return bad_request(exc.param, exc.message)
    if isinstance(exc, CuracacheError):
        return _from_service(exc)
    return HttpError(
        500, f"internal gateway error: {type(exc).__name__}", "server_error", code="internal_error"
    )


def _from_service(exc: CuracacheError) -> HttpError:
    code, message, backend = exc.code, exc.details, exc.source == "backend"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return HttpError(400, message, "invalid_request_error", param=_param(message))
    if code == grpc.StatusCode.UNAUTHENTICATED:
        # Callers' keys are checked by the gateway itself: the service refused the gateway's own
        # service_key, which no caller can fix.
        return HttpError(
            500,
            f"the service refused the gateway's service_key: {message}",
            "server_error",
            code="gateway_misconfigured",
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return HttpError(403, message, "permission_error")
    if code == grpc.StatusCode.NOT_FOUND:
        return HttpError(
            404,
            message,
            "not_found_error",
            param="model" if "model" in message else None,
            code="model_not_found" if "model" in message else None,
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry = _seconds(exc.retry_after if isinstance(exc, ResourceExhaustedError) else None)
        if backend:  # the LLM backend is saturated, not this caller over its quota
            return HttpError(
                503, message, "server_error", code="backend_overloaded", retry_after=retry
            )
        return HttpError(
            429, message, "rate_limit_error", code="rate_limit_exceeded", retry_after=retry
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return HttpError(504, message or "timed out", "server_error", code="timeout")
    if code == grpc.StatusCode.CANCELLED:  # dropped from an overloaded service's backlog
        return HttpError(
            503,
            f"cache service overloaded: {message}",
            "server_error",
            code="service_overloaded",
            retry_after=_RETRY_AFTER_UNAVAILABLE_S,
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        if backend:
            return HttpError(502, message, "server_error", code="backend_error")
        return HttpError(
            503,
            f"cache service unavailable: {message}",
            "server_error",
            code="service_unavailable",
            retry_after=_RETRY_AFTER_UNAVAILABLE_S,
        )
    return HttpError(500, f"{code.name}: {message}", "server_error", code="internal_error")


def _param(message: str) -> str | None:
    """The field a service message names (`query.params.temperature: ...` -> `temperature`)."""
    field, sep, _ = message.partition(":")
    if not sep or " " in field:
        return None
    for prefix in ("query.params.extra_json", "query.params.", "query."):
        if field.startswith(prefix):
            field = field[len(prefix) :]
            break
    return field.strip("[]'\"") or None


def _seconds(value: float | None) -> int:
    return max(1, math.ceil(value)) if value else 1
