"""The cache's exception tree.

`cache` may not import `curacache`, so it has its own small tree; the server maps it to gRPC
codes in its one status table (InvalidRequest -> INVALID_ARGUMENT, EntryNotFound -> NOT_FOUND,
NotPermitted -> PERMISSION_DENIED, CorruptEntry -> INTERNAL/UNAVAILABLE).
"""

from __future__ import annotations


class CacheError(Exception):
    """Base of every error the cache raises on purpose."""


class InvalidRequest(CacheError, ValueError):
    """A request or policy field is wrong; `field` names it the way the API spells it.

    It is also a ValueError so callers that only know the standard library still catch it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidPolicy(InvalidRequest):
    """A CategoryPolicy field is out of range (`field` is the policy field's name)."""


class EntryNotFound(CacheError):
    """The named cache entry does not exist (or is not known to this cache)."""


class NotPermitted(CacheError):
    """The tenant may not act on this entry (it belongs to another tenant)."""


class CorruptEntry(CacheError):
    """A stored payload could not be decoded into a CacheEntry."""
