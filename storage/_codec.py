"""Encoding shared by every store, so both validate alike and report identical sizes.

Validation is cheap type checking done *before* any write is sent, which is what makes a
batch all-or-nothing on Redis (a Lua script or MULTI cannot roll back a half-applied batch).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import NamedTuple

from storage.types import CollectionSpec, StoredRecord

_BYTES_LIKE = (bytes, bytearray, memoryview)


class EncodedRecord(NamedTuple):
    """A record as stored: text fields as str, JSON fields as UTF-8 text, plus its size."""

    id: str
    vector: bytes
    owner: str
    tenants: str  # JSON array
    payload: bytes
    metadata: str  # JSON object
    nbytes: int  # bytes of id + vector + owner + tenants + payload + metadata (UTF-8)


def _utf8_len(text: str, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates cannot be stored as UTF-8
        raise ValueError(f"{what} is not valid unicode: {exc}") from None


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def encode_tenants(tenants: Sequence[str], what: str = "tenants") -> str:
    if isinstance(tenants, (str, bytes)) or not isinstance(tenants, Sequence):
        raise TypeError(f"{what} must be a sequence of str, got {type(tenants).__name__}")
    for t in tenants:
        if not isinstance(t, str):
            raise TypeError(f"{what} must contain str, got {type(t).__name__}")
    text = _dumps(list(tenants))
    _utf8_len(text, what)
    return text


def encode_record(rec: StoredRecord) -> EncodedRecord:
    """Validate and encode; TypeError/ValueError name the offending field."""
    if not isinstance(rec, StoredRecord):
        raise TypeError(f"expected StoredRecord, got {type(rec).__name__}")
    if not isinstance(rec.id, str):
        raise TypeError(f"record id must be str, got {type(rec.id).__name__}")
    if not isinstance(rec.vector, _BYTES_LIKE):
        raise TypeError(f"record {rec.id!r}: vector must be bytes, got {type(rec.vector).__name__}")
    if not isinstance(rec.owner, str):
        raise TypeError(f"record {rec.id!r}: owner must be str, got {type(rec.owner).__name__}")
    if not isinstance(rec.payload, _BYTES_LIKE):
        raise TypeError(
            f"record {rec.id!r}: payload must be bytes, got {type(rec.payload).__name__}"
        )
    if not isinstance(rec.metadata, dict):
        raise TypeError(
            f"record {rec.id!r}: metadata must be dict, got {type(rec.metadata).__name__}"
        )
    for k, v in rec.metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"record {rec.id!r}: metadata must map str to str")
    vector = bytes(rec.vector)
    payload = bytes(rec.payload)
    tenants = encode_tenants(rec.tenants, f"record {rec.id!r}: tenants")
    metadata = _dumps(rec.metadata)
    nbytes = (
        _utf8_len(rec.id, "record id")
        + len(vector)
        + _utf8_len(rec.owner, f"record {rec.id!r}: owner")
        + _utf8_len(tenants, "tenants")
        + len(payload)
        + _utf8_len(metadata, f"record {rec.id!r}: metadata")
    )
    return EncodedRecord(rec.id, vector, rec.owner, tenants, payload, metadata, nbytes)


def decode_record(
    id: str, vector: bytes, owner: str, tenants: str | bytes, payload: bytes, metadata: str | bytes
) -> StoredRecord:
    return StoredRecord(
        id=id,
        vector=bytes(vector),
        owner=owner,
        tenants=tuple(json.loads(tenants)),
        payload=bytes(payload),
        metadata=dict(json.loads(metadata)),
    )


def check_name(name: str, what: str = "collection name") -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty str")
    _utf8_len(name, what)
    return name


def encode_spec(spec: CollectionSpec) -> str:
    if not isinstance(spec, CollectionSpec):
        raise TypeError(f"expected CollectionSpec, got {type(spec).__name__}")
    check_name(spec.name)
    return _dumps(dataclasses.asdict(spec))


def decode_spec(text: str | bytes) -> CollectionSpec:
    return CollectionSpec(**json.loads(text))


def unique_ids(ids: object) -> list[str]:
    """Materialise an id iterable once, dropping duplicates, keeping first-seen order."""
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be an iterable of str, not a single string")
    out = list(dict.fromkeys(ids))  # type: ignore[call-overload]
    for i in out:
        if not isinstance(i, str):
            raise TypeError(f"ids must be str, got {type(i).__name__}")
    return out
