"""Errors of the LLM backend client.

Each kind also derives from the matching service error (or `TimeoutError`), so the server's single
error→status map turns them into the right gRPC code without knowing this package:
unavailable → UNAVAILABLE, overloaded → RESOURCE_EXHAUSTED with `retry-after`, timeout →
DEADLINE_EXCEEDED, rejected → INVALID_ARGUMENT (the backend's own message is kept), unknown
model → NOT_FOUND. A backend error is never cached (DESIGN §5 admission), so callers only need
`except BackendError`.
"""

from __future__ import annotations

from curacache.errors import (
    CuracacheError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)


class BackendError(CuracacheError):
    """Any failure talking to an LLM backend; `backend` names the configured backend."""

    backend: str = ""


class BackendUnavailable(BackendError, Unavailable):
    """Connection refused or reset, 5xx, or a stream that ended before `[DONE]`."""

    def __init__(self, message: str, *, backend: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.status = status


class BackendOverloaded(BackendError, ResourceExhausted):
    """The backend said 429 (after our retries); `retry_after` is its advice in seconds."""

    def __init__(self, message: str, *, retry_after: float = 1.0, backend: str = "") -> None:
        ResourceExhausted.__init__(self, message, retry_after=retry_after)
        self.backend = backend


class BackendTimeout(BackendError, TimeoutError):
    """No connection, no first byte, or a stalled stream within the configured timeout."""

    def __init__(self, message: str, *, backend: str = "") -> None:
        super().__init__(message)
        self.backend = backend


class BackendRejected(BackendError, InvalidArgument):
    """A 4xx other than 429: the request itself is wrong (e.g. prompt longer than the context).

    `message` is the backend's own explanation, so the caller can fix the request.
    """

    def __init__(self, message: str, *, status: int, backend: str = "") -> None:
        InvalidArgument.__init__(
            self, "request", f"backend {backend or '?'} rejected it ({status}): {message}"
        )
        self.backend = backend
        self.status = status
        self.backend_message = message


class UnknownModel(BackendError, NotFound):
    """No configured backend serves this model (or the backend said it does not exist)."""

    def __init__(self, model: str, *, known: tuple[str, ...] = (), backend: str = "") -> None:
        hint = f"; served models: {', '.join(known)}" if known else ""
        super().__init__(f"unknown model {model!r}{hint}")
        self.model = model
        self.backend = backend
