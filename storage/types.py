"""Value types shared by every document store.

Stores see records as plain data: the vector is kept as little-endian float32 bytes so it
round-trips bit-exactly and the store never needs numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


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


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a store's change log: what changed, never the data itself.

    A replica applies a change by re-reading `ids` from the store, so applying it twice, or
    after a later write to the same ids, converges on the store's state (idempotent). One
    change may stand for several callers' writes (a group commit, `DocumentStore.put_many`).
    """

    stream: (
        str  # which log it came from: "" (SQLite's one log, Redis's registry log) or a collection
    )
    position: str  # "ms-seq" (a Redis stream id) or "seq-0" (SQLite); compare with position_key
    collection: str
    op: str  # "create" | "drop" | "put" | "delete" | "access" | "blob" | "note" | "reset"
    ids: tuple[str, ...] = ()
    note: str = ""  # op "note": what the writer announced (DocumentStore.announce)


class RecordWrite(NamedTuple):
    """One caller's `put_records` inside a group (`DocumentStore.put_many`)."""

    records: Sequence[StoredRecord]
    owner: str | None = None


def one_outcome(outcomes: Sequence[str | Exception]) -> str:
    """The position of a group of one write, or its error raised (`put_records`)."""
    (outcome,) = outcomes
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


class Deleted(NamedTuple):
    """What `delete_records` did: how many records existed, and the log position ("" if none)."""

    deleted: int
    position: str


def position_key(position: str) -> tuple[int, int]:
    """A log position as a comparable pair; "" (no position) sorts before every real one."""
    if not position:
        return (-1, -1)
    major, _, minor = position.partition("-")
    try:
        return (int(major), int(minor or 0))
    except ValueError:
        raise ValueError(f"not a log position: {position!r}") from None
