"""Vectors service: translate, validate at the boundary, delegate to the Collection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import grpc

from curacache.api.v1 import vectors_pb2 as pb
from curacache.api.v1 import vectors_pb2_grpc
from curacache.errors import InvalidArgument
from curacache.index.params import resolve_params
from curacache.index.registry import get_kind
from curacache.server import validate, wire
from curacache.server.collection import Collection, Written, search_soon
from curacache.server.config import LimitsConfig
from curacache.server.gate import Gate
from curacache.server.replica import Replica, make_token
from curacache.server.servicers.consistency import caught_up
from curacache.server.status import rpc
from curacache.server.vectordb import VectorDB
from storage.types import StoredRecord


class VectorsServicer(vectors_pb2_grpc.VectorsServicer):
    def __init__(
        self, db: VectorDB, gate: Gate, limits: LimitsConfig, replica: Replica | None = None
    ) -> None:
        self._db = db
        self._gate = gate
        self._limits = limits
        self._replica = replica

    def _collection(self, name: str) -> Collection:
        return self._db.get(validate.collection_name(name))

    def _token(self, collection: Collection, position: str) -> str:
        return make_token(self._db.store.stream_of(collection.spec.name), position)

    async def _caught_up(
        self, collection: str, token: str, context: grpc.aio.ServicerContext
    ) -> None:
        """Wait for `token`, unless another placement group serves `collection` (it is told
        so at once: this replica does not tail that collection's log)."""
        self._db.placement.check(validate.collection_name(collection))
        await caught_up(self._replica, token, context)

    @rpc
    async def Upsert(
        self, request: pb.UpsertRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertResponse:
        principal = self._gate.tenant(context, request.tenant)
        collection = self._collection(request.collection)
        limits, records = self._limits, request.records
        validate.ids([r.id for r in records], limits, "records", item="records[{i}].id")
        vectors = validate.vectors(
            [r.vector for r in records], collection.spec.dim, "records[{i}].vector"
        )
        if collection.spec.metric == "cosine":
            validate.nonzero_rows(vectors, "records[{i}].vector")
        stored = [
            StoredRecord(
                id=r.id,
                vector=r.vector,
                owner=request.tenant,
                tenants=validate.access_list(
                    request.tenant, r.tenants, limits, f"records[{i}].tenants"
                ),
                payload=validate.payload(r.payload, limits, f"records[{i}].payload"),
                metadata=validate.metadata(r.metadata, limits, f"records[{i}].metadata"),
            )
            for i, r in enumerate(records)
        ]
        n, position = await asyncio.to_thread(
            collection.upsert, request.tenant, stored, admin=principal.admin
        )
        return pb.UpsertResponse(upserted=n, log_position=self._token(collection, position))

    @rpc
    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResponse:
        self._gate.tenant(context, request.tenant)
        await self._caught_up(request.collection, request.min_log_position, context)
        collection = self._collection(request.collection)
        ids = validate.ids(request.ids, self._limits)
        found, missing = await asyncio.to_thread(
            collection.get, request.tenant, ids, with_vectors=request.with_vectors
        )
        return pb.GetResponse(records=[wire.record(r) for r in found], missing_ids=missing)

    @rpc
    async def Delete(
        self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteResponse:
        principal = self._gate.tenant(context, request.tenant)
        collection = self._collection(request.collection)
        ids = validate.ids(request.ids, self._limits)
        n, position = await asyncio.to_thread(
            collection.delete, request.tenant, ids, admin=principal.admin
        )
        return pb.DeleteResponse(deleted=n, log_position=self._token(collection, position))

    @rpc
    async def Grant(
        self, request: pb.GrantRequest, context: grpc.aio.ServicerContext
    ) -> pb.AccessResponse:
        return await self._change_access(
            context, request, Collection.grant, request.to_tenant, "to_tenant"
        )

    @rpc
    async def Revoke(
        self, request: pb.RevokeRequest, context: grpc.aio.ServicerContext
    ) -> pb.AccessResponse:
        return await self._change_access(
            context, request, Collection.revoke, request.from_tenant, "from_tenant"
        )

    async def _change_access(
        self,
        context: grpc.aio.ServicerContext,
        request: pb.GrantRequest | pb.RevokeRequest,
        change: Callable[..., Written],
        other: str,
        field: str,
    ) -> pb.AccessResponse:
        principal = self._gate.tenant(context, request.tenant)
        collection = self._collection(request.collection)
        ids = validate.ids(request.ids, self._limits)
        other = validate.tenant(other, field)
        n, position = await asyncio.to_thread(
            change, collection, request.tenant, ids, other, admin=principal.admin
        )
        return pb.AccessResponse(changed=n, log_position=self._token(collection, position))

    @rpc
    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        rows = await self._search(context, request, [request.vector], "vector")
        return wire.hits(rows)[0]

    @rpc
    async def SearchBatch(
        self, request: pb.SearchBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchBatchResponse:
        if not request.vectors:
            raise InvalidArgument("vectors", "must not be empty")
        validate.batch_size(len(request.vectors), self._limits, "vectors")
        rows = await self._search(context, request, request.vectors, "vectors[{i}]")
        return pb.SearchBatchResponse(results=wire.hits(rows))

    async def _search(
        self,
        context: grpc.aio.ServicerContext,
        request: pb.SearchRequest | pb.SearchBatchRequest,
        blobs: Sequence[bytes],
        field: str,
    ) -> list[list]:
        self._gate.tenant(context, request.tenant)
        await self._caught_up(request.collection, request.min_log_position, context)
        collection = self._collection(request.collection)
        spec = collection.spec
        queries = validate.vectors(blobs, spec.dim, field)
        if spec.metric == "cosine":
            validate.nonzero_rows(queries, field)
        k = validate.k(request.k, self._limits)
        params = resolve_params(
            get_kind(spec.index_kind, field="index.kind").search_params,
            request.params,
            field="params",
        )
        return await search_soon(
            collection, request.tenant, queries, k, params, with_payload=request.with_payload
        )
