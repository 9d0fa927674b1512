"""Boundary checks: every request field is checked here once, errors name the field."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from curacache.errors import InvalidArgument
from curacache.server.config import LimitsConfig

_COLLECTION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_TENANT_BYTES = 128


def collection_name(name: str, field: str = "collection") -> str:
    if not _COLLECTION_NAME.fullmatch(name):
        raise InvalidArgument(field, "must be 1..128 characters of [A-Za-z0-9_.-]")
    return name


def tenant(name: str, field: str = "tenant") -> str:
    if not name:
        raise InvalidArgument(field, "is required")
    if len(name.encode()) > MAX_TENANT_BYTES or not name.isprintable():
        raise InvalidArgument(field, f"must be printable and at most {MAX_TENANT_BYTES} bytes")
    return name


def record_id(value: str, limits: LimitsConfig, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value.encode()) > limits.max_id_bytes:
        raise InvalidArgument(field, f"must be at most {limits.max_id_bytes} bytes")
    return value


def ids(
    values: Sequence[str], limits: LimitsConfig, field: str = "ids", item: str = "{field}[{i}]"
) -> list[str]:
    """Non-empty, unique, bounded ids; a batch larger than max_batch is refused whole.

    `item` names one element, e.g. "records[{i}].id" when ids sit inside records.
    """
    if not values:
        raise InvalidArgument(field, "must not be empty")
    batch_size(len(values), limits, field)
    seen: set[str] = set()
    for i, value in enumerate(values):
        name = item.format(field=field, i=i)
        record_id(value, limits, name)
        if value in seen:
            raise InvalidArgument(name, f"duplicate id {value!r}")
        seen.add(value)
    return list(values)


def batch_size(n: int, limits: LimitsConfig, field: str) -> None:
    if n > limits.max_batch:
        raise InvalidArgument(field, f"batch of {n} exceeds the limit of {limits.max_batch}")


def vectors(blobs: Sequence[bytes], dim: int, field: str) -> np.ndarray:
    """Decode little-endian float32 blobs into one (n, dim) matrix; reject bad length/NaN/Inf."""
    want = 4 * dim
    for i, blob in enumerate(blobs):
        if len(blob) != want:
            raise InvalidArgument(
                field.format(i=i), f"expected {want} bytes (float32 x dim {dim}), got {len(blob)}"
            )
    # One join + one frombuffer: a per-row copy loop costs ~10x more for 1000-row batches.
    out = np.frombuffer(b"".join(blobs), dtype="<f4").astype(np.float32).reshape(len(blobs), dim)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        raise InvalidArgument(field.format(i=int(np.argmin(finite))), "contains NaN or Inf")
    return out


def nonzero_rows(matrix: np.ndarray, field: str) -> None:
    """Cosine needs a direction: a zero vector has none."""
    norms = np.einsum("ij,ij->i", matrix, matrix)
    if (norms == 0).any():
        raise InvalidArgument(
            field.format(i=int(np.argmin(norms))), "zero vector has no cosine similarity"
        )


def dim(value: int, limits: LimitsConfig, field: str = "dim") -> int:
    if not 1 <= value <= limits.max_dim:
        raise InvalidArgument(field, f"must be in [1, {limits.max_dim}], got {value}")
    return value


def k(value: int, limits: LimitsConfig, field: str = "k") -> int:
    if not 1 <= value <= limits.max_k:
        raise InvalidArgument(field, f"must be in [1, {limits.max_k}], got {value}")
    return value


def payload(value: bytes, limits: LimitsConfig, field: str) -> bytes:
    if len(value) > limits.max_payload_bytes:
        raise InvalidArgument(
            field, f"{len(value)} bytes exceeds the limit of {limits.max_payload_bytes}"
        )
    return value


def metadata(value: Mapping[str, str], limits: LimitsConfig, field: str) -> dict[str, str]:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
    if size > limits.max_metadata_bytes:
        raise InvalidArgument(
            field, f"{size} bytes exceeds the limit of {limits.max_metadata_bytes}"
        )
    if any(not key for key in value):
        raise InvalidArgument(field, "keys must not be empty")
    return dict(value)


def access_list(
    owner: str, tenants: Sequence[str], limits: LimitsConfig, field: str
) -> tuple[str, ...]:
    """The owner first, then the named tenants, deduplicated in order."""
    if len(tenants) > limits.max_tenants_per_record:
        raise InvalidArgument(field, f"at most {limits.max_tenants_per_record} tenants per record")
    for i, name in enumerate(tenants):
        tenant(name, f"{field}[{i}]")
    return tuple(dict.fromkeys((owner, *tenants)))
