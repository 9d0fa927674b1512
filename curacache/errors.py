"""The service's exception tree. One map in curacache.server.status turns these into gRPC codes."""

from __future__ import annotations


class CuracacheError(Exception):
    """Base of every error raised on purpose inside the service."""


class InvalidArgument(CuracacheError):
    """A request field is wrong; `field` names it the way the API spells it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(CuracacheError):
    pass


class AlreadyExists(CuracacheError):
    pass


class PermissionDenied(CuracacheError):
    pass


class Unauthenticated(CuracacheError):
    pass


class ResourceExhausted(CuracacheError):
    """Quota or overload; `retry_after` seconds is sent to the client as metadata."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(CuracacheError):
    pass


class WrongGroup(CuracacheError):
    """The collection is placed on another replica group than this replica's (placement)."""

    def __init__(self, collection: str, group: str, here: str) -> None:
        super().__init__(
            f"collection {collection!r} is served by replica group {group!r}; "
            f"this replica serves group {here!r}"
        )
        self.collection = collection
        self.group = group
        self.here = here
