"""Value types shared by every document store.

Stores see records as plain data: the vector is kept as little-endian float32 bytes so it
round-trips bit-exactly and the store never needs numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """What a collection is: fixed at creation, persisted, used to rebuild its index."""

    name: str
    dim: int
    metric: str  # "cosine" | "l2" | "ip"
    index_kind: str
    index_params: dict[str, float] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record as the store holds it. `tenants` always contains `owner`."""

    id: str
    vector: bytes  # little-endian float32 × dim
    owner: str
    tenants: tuple[str, ...]
    payload: bytes = b""
    metadata: dict[str, str] = field(default_factory=dict)
