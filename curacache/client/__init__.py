"""Curacache Python SDK. Imports only the generated API (never the server's packages)."""

from curacache.client.aio import AsyncClient
from curacache.client.cache_types import (
    CachedResponse,
    CategoryPolicy,
    CategoryStats,
    GenerateResult,
    LookupResult,
    StoreResult,
    Usage,
)
from curacache.client.errors import (
    AlreadyExistsError,
    CuracacheError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from curacache.client.sync import Client
from curacache.client.types import CollectionInfo, CollectionStats, Hit, Record

__all__ = [
    "AlreadyExistsError", "AsyncClient", "CachedResponse", "CategoryPolicy", "CategoryStats",
    "Client", "CollectionInfo", "CollectionStats", "GenerateResult", "LookupResult", "StoreResult",
    "Usage",
    "CuracacheError", "DeadlineExceededError", "Hit", "InvalidArgumentError", "NotFoundError",
    "PermissionDeniedError", "Record", "ResourceExhaustedError", "UnauthenticatedError",
    "UnavailableError",
]
