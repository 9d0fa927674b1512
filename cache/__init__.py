"""Category-aware semantic cache for LLM responses: pure policy, ports injected (DESIGN §5).

Imports only numpy and the standard library. The server wires the ports in `cache.ports`
to the vector collections + document store, the embedder and the backend client.
"""

from cache.errors import (
    CacheError,
    CorruptEntry,
    EntryNotFound,
    InvalidPolicy,
    InvalidRequest,
    NotPermitted,
)
from cache.options import CacheOptions, CategoryStats
from cache.policy import CategoryPolicy, Eviction, default_policies, effective
from cache.ports import Backend, Classifier, Clock, Embedder, EntryRepository
from cache.service import SemanticCache
from cache.stats import BreakEvenConfig
from cache.types import (
    SHARED_TENANT,
    CachedResponse,
    CacheEntry,
    Chunk,
    FinalResult,
    LookupRequest,
    LookupResult,
    Reason,
    StoreReason,
    StoreResult,
    ToolCall,
    ToolCallDelta,
)

__all__ = [
    "SHARED_TENANT",
    "Backend",
    "BreakEvenConfig",
    "CacheEntry",
    "CacheError",
    "CacheOptions",
    "CachedResponse",
    "CategoryPolicy",
    "CategoryStats",
    "Chunk",
    "Classifier",
    "Clock",
    "CorruptEntry",
    "Embedder",
    "EntryNotFound",
    "EntryRepository",
    "Eviction",
    "FinalResult",
    "InvalidPolicy",
    "InvalidRequest",
    "LookupRequest",
    "LookupResult",
    "NotPermitted",
    "Reason",
    "SemanticCache",
    "StoreReason",
    "StoreResult",
    "ToolCall",
    "ToolCallDelta",
    "default_policies",
    "effective",
]
