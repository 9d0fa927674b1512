"""Curacache Python SDK. Imports only the generated API (never the server's packages)."""

from curacache.client.aio import AsyncClient
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
from curacache.client.errors import (
    AlreadyExistsError,
    CancelledByServerError,
    CuracacheError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    WrongGroupError,
)
from curacache.client.sync import Client
from curacache.client.types import CollectionInfo, CollectionStats, Hit, Record

__all__ = [
    "AlreadyExistsError",
    "AsyncClient",
    "CachedResponse",
    "CancelledByServerError",
    "CategoryPolicy",
    "CategoryStats",
    "Client",
    "CollectionInfo",
    "CollectionStats",
    "CuracacheError",
    "DeadlineExceededError",
    "ForwardHead",
    "GenerateResult",
    "GenerateStart",
    "Hit",
    "InvalidArgumentError",
    "LookupResult",
    "Model",
    "NotFoundError",
    "PermissionDeniedError",
    "Record",
    "ResourceExhaustedError",
    "StoreResult",
    "ToolCall",
    "ToolCallDelta",
    "UnauthenticatedError",
    "UnavailableError",
    "Usage",
    "WrongGroupError",
]
