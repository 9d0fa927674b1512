"""Translation between protobuf messages and the service's own types (no logic beyond that)."""

from __future__ import annotations

from collections.abc import Sequence

from curacache.api.v1 import collections_pb2 as cpb
from curacache.api.v1 import vectors_pb2 as vpb
from curacache.errors import InvalidArgument
from curacache.server.collection import CollectionStats, Hit
from storage.types import CollectionSpec, StoredRecord

_METRIC_NAMES: dict[int, str] = {
    cpb.METRIC_UNSPECIFIED: "cosine",
    cpb.METRIC_COSINE: "cosine",
    cpb.METRIC_L2: "l2",
    cpb.METRIC_IP: "ip",
}
_METRIC_ENUMS = {"cosine": cpb.METRIC_COSINE, "l2": cpb.METRIC_L2, "ip": cpb.METRIC_IP}


def metric_name(value: int) -> str:
    try:
        return _METRIC_NAMES[value]
    except KeyError:
        raise InvalidArgument("metric", f"unknown metric enum value {value}") from None


def collection_info(spec: CollectionSpec) -> cpb.CollectionInfo:
    return cpb.CollectionInfo(
        name=spec.name,
        dim=spec.dim,
        metric=_METRIC_ENUMS[spec.metric],
        index=cpb.IndexSpec(kind=spec.index_kind, params=spec.index_params),
        created_at=spec.created_at,
    )


def collection_stats(spec: CollectionSpec, stats: CollectionStats) -> cpb.CollectionStats:
    return cpb.CollectionStats(
        name=spec.name,
        record_count=stats.record_count,
        tenant_count=stats.tenant_count,
        index_memory_bytes=stats.index_memory,
        index_memory_total_bytes=sum(stats.index_memory.values()),
        store_bytes=stats.store_bytes,
        index_kind=spec.index_kind,
    )


def record(rec: StoredRecord) -> vpb.Record:
    return vpb.Record(
        id=rec.id,
        vector=rec.vector,
        owner=rec.owner,
        tenants=rec.tenants,
        payload=rec.payload,
        metadata=rec.metadata,
    )


def hits(rows: Sequence[Sequence[Hit]]) -> list[vpb.SearchResponse]:
    return [
        vpb.SearchResponse(
            hits=[
                vpb.Hit(id=h.id, score=h.score, payload=h.payload, metadata=h.metadata) for h in row
            ]
        )
        for row in rows
    ]
