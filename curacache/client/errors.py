"""The SDK's exception tree, one class per gRPC status the service sends on purpose."""

from __future__ import annotations

import grpc

ERROR_SOURCE_KEY = (
    "curacache-error-source"  # the server's trailing metadata (curacache.server.status)
)
# Trailing metadata of a call sent to the wrong replica group (curacache.server.status): the
# group that serves the collection, and the group of the replica that answered.
GROUP_KEY = "curacache-group"
REPLICA_GROUP_KEY = "curacache-replica-group"


class CuracacheError(Exception):
    """A call failed; `code` is the gRPC status, `details` the server's message, `source`
    "backend" when an LLM backend failed (down, overloaded, timed out) rather than the service."""

    def __init__(self, code: grpc.StatusCode, details: str, *, source: str = "") -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.source = source


class InvalidArgumentError(CuracacheError): ...


class NotFoundError(CuracacheError): ...


class AlreadyExistsError(CuracacheError): ...


class PermissionDeniedError(CuracacheError): ...


class UnauthenticatedError(CuracacheError): ...


class UnavailableError(CuracacheError): ...


class CancelledByServerError(UnavailableError):
    """The server cancelled the call (gRPC CANCELLED that this client did not ask for): gRPC
    drops calls from the backlog of an overloaded server (`limits.max_pending_rpcs`) before
    they run, and a stopping server cancels what outlives its grace period. Like UNAVAILABLE,
    an idempotent read is sent once to each other replica first; retry after a pause."""


class DeadlineExceededError(CuracacheError): ...


class WrongGroupError(CuracacheError):
    """The collection is served by another replica group (`group`) than the replica asked."""

    def __init__(
        self, code: grpc.StatusCode, details: str, group: str, *, source: str = ""
    ) -> None:
        super().__init__(code, details, source=source)
        self.group = group


class ResourceExhaustedError(CuracacheError):
    def __init__(
        self, code: grpc.StatusCode, details: str, retry_after: float | None, *, source: str = ""
    ) -> None:
        super().__init__(code, details, source=source)
        self.retry_after = retry_after


_BY_CODE: dict[grpc.StatusCode, type[CuracacheError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    # Only the server can end a call this way: a caller's own cancellation raises
    # asyncio.CancelledError (or grpc.FutureCancelledError), never an RpcError.
    grpc.StatusCode.CANCELLED: CancelledByServerError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def from_rpc_error(exc: grpc.aio.AioRpcError) -> CuracacheError:
    code, details = exc.code(), exc.details() or ""
    trailers = dict(exc.trailing_metadata() or ())
    source = str(trailers.get(ERROR_SOURCE_KEY, ""))
    if code == grpc.StatusCode.FAILED_PRECONDITION and trailers.get(GROUP_KEY):
        return WrongGroupError(code, details, str(trailers[GROUP_KEY]), source=source)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry = trailers.get("retry-after")
        return ResourceExhaustedError(code, details, float(retry) if retry else None, source=source)
    if code == grpc.StatusCode.CANCELLED:  # gRPC's own details say only "CANCELLED"
        details = (
            f"the server cancelled the call ({details or 'no details'}): it is overloaded "
            "(its backlog of calls is over limits.max_pending_rpcs) or stopping; retry later"
        )
    return _BY_CODE.get(code, CuracacheError)(code, details, source=source)
