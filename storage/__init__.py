"""Document stores behind one Protocol: SQLite (embedded default) and Redis."""

from storage.base import DocumentStore
from storage.errors import (
    ChangedMeanwhile,
    CollectionExists,
    CollectionMissing,
    OwnedByAnother,
    StoreError,
    StoreUnavailable,
)
from storage.redis import RedisStore
from storage.sqlite import SqliteStore
from storage.types import CollectionSpec, StoredRecord

__all__ = [
    "ChangedMeanwhile",
    "CollectionExists",
    "CollectionMissing",
    "CollectionSpec",
    "DocumentStore",
    "OwnedByAnother",
    "RedisStore",
    "SqliteStore",
    "StoreError",
    "StoreUnavailable",
    "StoredRecord",
]
