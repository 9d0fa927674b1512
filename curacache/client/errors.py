"""The SDK's exception tree, one class per gRPC status the service sends on purpose."""

from __future__ import annotations

import grpc


class CuracacheError(Exception):
    """A call failed; `code` is the gRPC status, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class InvalidArgumentError(CuracacheError): ...
class NotFoundError(CuracacheError): ...
class AlreadyExistsError(CuracacheError): ...
class PermissionDeniedError(CuracacheError): ...
class UnauthenticatedError(CuracacheError): ...
class UnavailableError(CuracacheError): ...
class DeadlineExceededError(CuracacheError): ...


class ResourceExhaustedError(CuracacheError):
    def __init__(self, code: grpc.StatusCode, details: str, retry_after: float | None) -> None:
        super().__init__(code, details)
        self.retry_after = retry_after


_BY_CODE: dict[grpc.StatusCode, type[CuracacheError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def from_rpc_error(exc: grpc.aio.AioRpcError) -> CuracacheError:
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry = dict(exc.trailing_metadata() or ()).get("retry-after")
        return ResourceExhaustedError(code, details, float(retry) if retry else None)
    return _BY_CODE.get(code, CuracacheError)(code, details)
