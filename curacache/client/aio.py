"""AsyncClient: the one implementation of every SDK call (the sync Client wraps it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from curacache.api.v1 import cache_pb2_grpc, collections_pb2_grpc, vectors_pb2_grpc
from curacache.api.v1 import collections_pb2 as cpb
from curacache.api.v1 import vectors_pb2 as vpb
from curacache.client.cache import CacheCalls
from curacache.client.errors import GROUP_KEY, REPLICA_GROUP_KEY, from_rpc_error
from curacache.client.types import CollectionInfo, CollectionStats, Hit, Record

_METRICS = {"cosine": cpb.METRIC_COSINE, "l2": cpb.METRIC_L2, "ip": cpb.METRIC_IP}
_METRIC_NAMES = {v: k for k, v in _METRICS.items()}
CONSISTENCY = ("eventual", "read_your_writes")

# Calls that change nothing: safe to send again to another replica after UNAVAILABLE (or a
# server's CANCELLED: it dropped the call from its backlog, or was stopping).
_IDEMPOTENT = frozenset(
    {
        ("collections", "Get"),
        ("collections", "List"),
        ("collections", "Stats"),
        ("vectors", "Get"),
        ("vectors", "Search"),
        ("vectors", "SearchBatch"),
        ("health", "Check"),
        ("cache", "Lookup"),
        ("cache", "Models"),
        ("cache", "GetPolicies"),
        ("cache", "Stats"),
    }
)
_RETRY_ELSEWHERE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


class _Endpoint:
    """One server (replica): its channel and a stub per service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        # The generated service stubs carry no annotations (only the messages have .pyi files).
        self.collections = collections_pb2_grpc.CollectionsStub(channel)  # type: ignore[no-untyped-call]
        self.vectors = vectors_pb2_grpc.VectorsStub(channel)  # type: ignore[no-untyped-call]
        self.health = health_pb2_grpc.HealthStub(channel)
        self.cache = cache_pb2_grpc.CacheStub(channel)  # type: ignore[no-untyped-call]


class AsyncClient(CacheCalls):
    """Async client for a Curacache server (vector collections here; cache calls in CacheCalls).

    `target` is "host:port", or several of them (replicas of one store: calls go to each in
    turn, and a read that gets UNAVAILABLE is sent to the next); one DNS name with several
    addresses (`dns:///name:port`) is spread with gRPC's round_robin policy.
    `api_key` is sent as `authorization: Bearer <key>`; `timeout` is the per-call deadline in
    seconds (None: no deadline); `channel_options` are extra gRPC channel arguments (e.g.
    `("grpc.max_reconnect_backoff_ms", 1000)`).
    `consistency="read_your_writes"`: reads of a collection wait, on whichever replica serves
    them, until that replica has applied this client's last write to it, and cache lookups
    until it has applied this client's last cache write (README "Running more than one");
    "eventual" (default) reads whatever the replica has applied.
    """

    def __init__(
        self,
        target: str | Sequence[str] = "127.0.0.1:50051",
        *,
        api_key: str | None = None,
        timeout: float | None = 60.0,
        credentials: grpc.ChannelCredentials | None = None,
        max_message_bytes: int = 256 << 20,
        channel_options: Sequence[tuple[str, Any]] = (),
        consistency: str = "eventual",
    ) -> None:
        if consistency not in CONSISTENCY:
            raise ValueError(f"consistency: must be one of {CONSISTENCY}, got {consistency!r}")
        targets = [target] if isinstance(target, str) else list(target)
        if not targets:
            raise ValueError("target: at least one host:port is needed")
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.lb_policy_name", "round_robin"),
            *channel_options,
        ]
        self._endpoints = [
            _Endpoint(
                grpc.aio.secure_channel(t, credentials, options=options)
                if credentials is not None
                else grpc.aio.insecure_channel(t, options=options)
            )
            for t in targets
        ]
        self._turn = 0
        self._group_of: dict[str, str] = {}  # placed collection -> its replica group (learned)
        self._endpoint_group: dict[int, str] = {}  # endpoint -> its replica group (learned)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout = timeout
        self._read_your_writes = consistency == "read_your_writes"
        self._positions: dict[str, str] = {}

    async def close(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.channel.close()

    def log_position(self, collection: str) -> str:
        """The change-log position of this client's last write to `collection` ("" if none):
        pass it as `min_log_position` to read it from any replica, from any client."""
        return self._positions.get(collection, "")

    def _wrote(self, collection: str, position: str) -> None:
        if position:
            self._positions[collection] = position

    def _min_position(self, collection: str, given: str) -> str:
        if given:
            return given
        return self._positions.get(collection, "") if self._read_your_writes else ""

    def _next_endpoint(self) -> _Endpoint:
        endpoint = self._endpoints[self._turn % len(self._endpoints)]
        self._turn += 1
        return endpoint

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self, service: str, method: str, request: Any, collection: str | None = None
    ) -> Any:
        """One unary call on the next replica (for a collection placed on a replica group, one
        of that group's when known). An idempotent call that gets UNAVAILABLE (or the server's
        CANCELLED) is tried once on each other replica before the error is raised; any call
        sent to the wrong group (FAILED_PRECONDITION naming the right one: nothing was done)
        goes on to another replica, and the client remembers which group serves the
        collection and which group each replica it heard from belongs to."""
        idempotent = (service, method) in _IDEMPOTENT
        tried: set[int] = set()
        for attempt in range(len(self._endpoints)):
            index = self._pick(collection, tried)
            tried.add(index)
            stub = getattr(self._endpoints[index], service)
            try:
                return await getattr(stub, method)(
                    request, metadata=self._metadata, timeout=self._timeout
                )
            except grpc.aio.AioRpcError as exc:
                last = attempt == len(self._endpoints) - 1
                code = exc.code()
                if code == grpc.StatusCode.FAILED_PRECONDITION and collection is not None:
                    trailers = dict(exc.trailing_metadata() or ())
                    group = trailers.get(GROUP_KEY)
                    if isinstance(group, str) and group:
                        self._group_of[collection] = group
                        here = trailers.get(REPLICA_GROUP_KEY)
                        if isinstance(here, str):
                            self._endpoint_group[index] = here
                        if not last:
                            continue
                if code in _RETRY_ELSEWHERE and idempotent and not last:
                    continue
                raise from_rpc_error(exc) from None
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _pick(self, collection: str | None, tried: set[int]) -> int:
        """The next replica in turn, preferring for a placed collection one known to be in
        its group, then one whose group is not known yet."""
        n = len(self._endpoints)
        order = [(self._turn + i) % n for i in range(n)]
        self._turn += 1
        fresh = [i for i in order if i not in tried] or order
        group = self._group_of.get(collection) if collection is not None else None
        if group is None:
            return fresh[0]
        known = [i for i in fresh if self._endpoint_group.get(i) == group]
        unknown = [i for i in fresh if i not in self._endpoint_group]
        return (known or unknown or fresh)[0]

    async def _stream(self, service: str, method: str, request: Any) -> AsyncIterator[Any]:
        stub = getattr(self._next_endpoint(), service)
        call = getattr(stub, method)(request, metadata=self._metadata, timeout=self._timeout)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()  # a consumer that stops early must not leave the stream open

    # -- collections -----------------------------------------------------------------------
    async def create_collection(
        self, name: str, dim: int, metric: str = "cosine", index: str | None = None, **params: float
    ) -> CollectionInfo:
        """Create a collection; `index` is "curator", "hnsw" or "flat" (None: server default)."""
        if metric not in _METRICS:
            raise ValueError(f"metric: must be one of {sorted(_METRICS)}, got {metric!r}")
        request = cpb.CreateCollectionRequest(
            name=name,
            dim=dim,
            metric=_METRICS[metric],
            index=cpb.IndexSpec(kind=index or "", params=params),
        )
        info = await self._call("collections", "Create", request, name)
        self._wrote(name, info.log_position)
        return _collection_info(info)

    async def get_collection(self, name: str) -> CollectionInfo:
        return _collection_info(
            await self._call("collections", "Get", cpb.GetCollectionRequest(name=name), name)
        )

    async def list_collections(self) -> list[CollectionInfo]:
        response = await self._call("collections", "List", cpb.ListCollectionsRequest())
        return [_collection_info(c) for c in response.collections]

    async def delete_collection(self, name: str) -> None:
        await self._call("collections", "Delete", cpb.DeleteCollectionRequest(name=name), name)

    async def stats(self, collection: str) -> CollectionStats:
        s = await self._call(
            "collections", "Stats", cpb.CollectionStatsRequest(name=collection), collection
        )
        return CollectionStats(
            name=s.name,
            record_count=s.record_count,
            tenant_count=s.tenant_count,
            index_kind=s.index_kind,
            index_memory_bytes=dict(s.index_memory_bytes),
            index_memory_total_bytes=s.index_memory_total_bytes,
            store_bytes=s.store_bytes,
        )

    # -- vectors -----------------------------------------------------------------------------
    async def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray | Sequence[Sequence[float]],
        owner: str,
        tenants: Sequence[str] | Sequence[Sequence[str]] | None = None,
        payloads: Sequence[bytes] | None = None,
        metadata: Sequence[Mapping[str, str]] | None = None,
    ) -> int:
        """Insert or replace records owned by `owner`, atomically.

        `tenants` extra tenants that may see the records: one list for every record, or one
        list per record. Returns the number of records written.
        """
        matrix = _matrix(vectors)
        n = len(ids)
        if matrix.shape[0] != n:
            raise ValueError(f"vectors: {matrix.shape[0]} rows for {n} ids")
        access = _per_record_tenants(tenants, n)
        for name, values in (("payloads", payloads), ("metadata", metadata)):
            if values is not None and len(values) != n:
                raise ValueError(f"{name}: {len(values)} items for {n} ids")
        records = [
            vpb.Record(
                id=ids[i],
                vector=matrix[i].tobytes(),
                tenants=access[i],
                payload=payloads[i] if payloads is not None else b"",
                metadata=metadata[i] if metadata is not None else {},
            )
            for i in range(n)
        ]
        request = vpb.UpsertRequest(collection=collection, tenant=owner, records=records)
        response = await self._call("vectors", "Upsert", request, collection)
        self._wrote(collection, response.log_position)
        return int(response.upserted)

    async def get(
        self,
        collection: str,
        ids: Sequence[str],
        tenant: str,
        *,
        with_vectors: bool = False,
        min_log_position: str = "",
    ) -> list[Record]:
        """Records `tenant` can see among `ids`, in request order; others are left out."""
        request = vpb.GetRequest(
            collection=collection,
            tenant=tenant,
            ids=ids,
            with_vectors=with_vectors,
            min_log_position=self._min_position(collection, min_log_position),
        )
        response = await self._call("vectors", "Get", request, collection)
        return [
            Record(
                id=r.id,
                owner=r.owner,
                tenants=tuple(r.tenants),
                payload=r.payload,
                metadata=dict(r.metadata),
                vector=np.frombuffer(r.vector, dtype="<f4").copy() if r.vector else None,
            )
            for r in response.records
        ]

    async def delete(self, collection: str, ids: Sequence[str], tenant: str) -> int:
        """Delete records `tenant` owns; returns how many were deleted."""
        request = vpb.DeleteRequest(collection=collection, tenant=tenant, ids=ids)
        response = await self._call("vectors", "Delete", request, collection)
        self._wrote(collection, response.log_position)
        return int(response.deleted)

    async def grant(self, collection: str, ids: Sequence[str], to_tenant: str, tenant: str) -> int:
        """Share records `tenant` owns with `to_tenant`; returns how many changed."""
        request = vpb.GrantRequest(
            collection=collection, tenant=tenant, ids=ids, to_tenant=to_tenant
        )
        response = await self._call("vectors", "Grant", request, collection)
        self._wrote(collection, response.log_position)
        return int(response.changed)

    async def revoke(
        self, collection: str, ids: Sequence[str], from_tenant: str, tenant: str
    ) -> int:
        """Stop sharing records `tenant` owns with `from_tenant`; returns how many changed."""
        request = vpb.RevokeRequest(
            collection=collection, tenant=tenant, ids=ids, from_tenant=from_tenant
        )
        response = await self._call("vectors", "Revoke", request, collection)
        self._wrote(collection, response.log_position)
        return int(response.changed)

    async def search(
        self,
        collection: str,
        vector: np.ndarray | Sequence[float],
        tenant: str,
        k: int = 10,
        with_payload: bool = False,
        min_log_position: str = "",
        **params: float,
    ) -> list[Hit]:
        """Top-k records `tenant` can see; `params` are index search params (gamma2, ef, ...).
        `min_log_position` (a `log_position` token): answer only once the serving replica
        has applied the log that far."""
        row = _matrix(vector)
        if row.shape[0] != 1:
            raise ValueError(f"vector: expected one vector, got {row.shape[0]}; use search_batch")
        request = vpb.SearchRequest(
            collection=collection,
            tenant=tenant,
            vector=row[0].tobytes(),
            k=k,
            params=params,
            with_payload=with_payload,
            min_log_position=self._min_position(collection, min_log_position),
        )
        return _hits(await self._call("vectors", "Search", request, collection), with_payload)

    async def search_batch(
        self,
        collection: str,
        vectors: np.ndarray | Sequence[Sequence[float]],
        tenant: str,
        k: int = 10,
        with_payload: bool = False,
        min_log_position: str = "",
        **params: float,
    ) -> list[list[Hit]]:
        matrix = _matrix(vectors)
        request = vpb.SearchBatchRequest(
            collection=collection,
            tenant=tenant,
            vectors=[row.tobytes() for row in matrix],
            k=k,
            params=params,
            with_payload=with_payload,
            min_log_position=self._min_position(collection, min_log_position),
        )
        response = await self._call("vectors", "SearchBatch", request, collection)
        return [_hits(r, with_payload) for r in response.results]

    async def health(self, service: str = "") -> str:
        """The server's health status name, e.g. "SERVING"."""
        response = await self._call(
            "health", "Check", health_pb2.HealthCheckRequest(service=service)
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def _matrix(vectors: np.ndarray | Sequence[Any]) -> np.ndarray:
    """Little-endian float32, C-contiguous, 2-D (a single vector becomes one row)."""
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    return matrix.reshape(1, -1) if matrix.ndim == 1 else matrix


def _per_record_tenants(
    tenants: Sequence[str] | Sequence[Sequence[str]] | None, n: int
) -> list[Sequence[str]]:
    if tenants is None:
        return [()] * n
    if isinstance(tenants, str):
        raise ValueError("tenants: expected a list of tenant names, got a string")
    if all(isinstance(t, str) for t in tenants):
        return [cast(Sequence[str], tenants)] * n
    if len(tenants) != n:
        raise ValueError(f"tenants: {len(tenants)} lists for {n} ids")
    return list(tenants)


def _hits(response: vpb.SearchResponse, with_payload: bool) -> list[Hit]:
    return [
        Hit(h.id, h.score, h.payload if with_payload else None, dict(h.metadata))
        for h in response.hits
    ]


def _collection_info(info: cpb.CollectionInfo) -> CollectionInfo:
    return CollectionInfo(
        name=info.name,
        dim=info.dim,
        metric=_METRIC_NAMES.get(info.metric, "cosine"),
        index=info.index.kind,
        index_params=dict(info.index.params),
        created_at=info.created_at,
    )
