"""Collections service: translate, validate, delegate to VectorDB."""

from __future__ import annotations

import asyncio

import grpc

from curacache.api.v1 import collections_pb2 as pb
from curacache.api.v1 import collections_pb2_grpc
from curacache.server import validate, wire
from curacache.server.config import LimitsConfig
from curacache.server.gate import Gate
from curacache.server.replica import make_token
from curacache.server.status import rpc
from curacache.server.vectordb import VectorDB


class CollectionsServicer(collections_pb2_grpc.CollectionsServicer):
    def __init__(self, db: VectorDB, gate: Gate, limits: LimitsConfig) -> None:
        self._db = db
        self._gate = gate
        self._limits = limits

    @rpc
    async def Create(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        self._gate.principal(context).require_manage()
        spec, position = await asyncio.to_thread(
            self._db.create,
            validate.collection_name(request.name, "name"),
            dim=validate.dim(request.dim, self._limits),
            metric=wire.metric_name(request.metric),
            index_kind=request.index.kind,
            params=dict(request.index.params),
        )
        info = wire.collection_info(spec)
        info.log_position = make_token("", position)  # the registry stream
        return info

    @rpc
    async def Get(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionInfo:
        self._gate.principal(context)
        return wire.collection_info(
            self._db.get(validate.collection_name(request.name, "name")).spec
        )

    @rpc
    async def List(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        self._gate.principal(context)
        return pb.ListCollectionsResponse(
            collections=[wire.collection_info(s) for s in self._db.list()]
        )

    @rpc
    async def Delete(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCollectionResponse:
        self._gate.principal(context).require_manage()
        await asyncio.to_thread(self._db.delete, validate.collection_name(request.name, "name"))
        return pb.DeleteCollectionResponse()

    @rpc
    async def Stats(
        self, request: pb.CollectionStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionStats:
        principal = self._gate.principal(context)
        collection = self._db.get(validate.collection_name(request.name, "name"))
        stats = await asyncio.to_thread(collection.stats, principal.tenants)
        return wire.collection_stats(collection.spec, stats)
