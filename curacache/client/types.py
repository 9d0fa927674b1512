"""Typed results the SDK returns (plain dataclasses; numpy for vectors)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    score: float  # similarity for cosine/ip (larger is better), euclidean distance for l2
    payload: bytes | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    owner: str
    tenants: tuple[str, ...]
    payload: bytes
    metadata: dict[str, str]
    vector: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    dim: int
    metric: str
    index: str
    index_params: dict[str, float]
    created_at: float


@dataclass(frozen=True, slots=True)
class CollectionStats:
    name: str
    record_count: int
    tenant_count: int
    index_kind: str
    index_memory_bytes: dict[str, int]
    index_memory_total_bytes: int
    store_bytes: int
