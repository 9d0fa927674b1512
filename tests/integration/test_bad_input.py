"""Every RPC rejects bad input with the right status and a message naming the field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from curacache.api.v1 import collections_pb2 as cpb
from curacache.api.v1 import collections_pb2_grpc, vectors_pb2_grpc
from curacache.api.v1 import vectors_pb2 as vpb
from curacache.client import Client
from tests.server_harness import ThreadServer

DIM = 8
LIMITS = {"limits.max_batch": 50, "limits.max_k": 100, "limits.max_payload_bytes": 1024}
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


@pytest.fixture
def stubs(
    start_server: Callable[..., ThreadServer],
) -> Iterator[tuple[collections_pb2_grpc.CollectionsStub, vectors_pb2_grpc.VectorsStub]]:
    server = start_server(**LIMITS)
    with Client(server.target) as c:
        c.create_collection("c", DIM, index="flat")
        c.upsert("c", ["a", "b"], np.ones((2, DIM)), owner="alice", tenants=["bob"])
    channel = grpc.insecure_channel(server.target)
    yield collections_pb2_grpc.CollectionsStub(channel), vectors_pb2_grpc.VectorsStub(channel)
    channel.close()


def vec(*values: float, dim: int = DIM) -> bytes:
    out = np.ones(dim, dtype="<f4")
    out[: len(values)] = values
    return out.tobytes()


def rec(rid: str = "x", vector: bytes | None = None, **kw: Any) -> vpb.Record:
    return vpb.Record(id=rid, vector=vec() if vector is None else vector, **kw)


def upsert(
    records: list[vpb.Record], collection: str = "c", tenant: str = "alice"
) -> vpb.UpsertRequest:
    return vpb.UpsertRequest(collection=collection, tenant=tenant, records=records)


def search(**kw: Any) -> vpb.SearchRequest:
    base: dict[str, Any] = dict(collection="c", tenant="alice", vector=vec(), k=5)
    base.update(kw)
    return vpb.SearchRequest(**base)


CASES = [
    # (service, method, request, code, field named in the message)
    ("c", "Create", cpb.CreateCollectionRequest(name="bad name!", dim=4), INVALID, "name"),
    ("c", "Create", cpb.CreateCollectionRequest(name="z", dim=0), INVALID, "dim"),
    (
        "c",
        "Create",
        cpb.CreateCollectionRequest(name="z", dim=4, metric=9),  # type: ignore[arg-type]  # not a Metric, on purpose
        INVALID,
        "metric",
    ),
    (
        "c",
        "Create",
        cpb.CreateCollectionRequest(name="z", dim=4, index=cpb.IndexSpec(kind="nope")),
        INVALID,
        "index.kind",
    ),
    (
        "c",
        "Create",
        cpb.CreateCollectionRequest(
            name="z", dim=4, index=cpb.IndexSpec(kind="flat", params={"x": 1})
        ),
        INVALID,
        "index.params.x",
    ),
    (
        "c",
        "Create",
        cpb.CreateCollectionRequest(name="c", dim=4),
        grpc.StatusCode.ALREADY_EXISTS,
        "'c'",
    ),
    ("c", "Get", cpb.GetCollectionRequest(name="missing"), NOT_FOUND, "missing"),
    ("c", "Delete", cpb.DeleteCollectionRequest(name="missing"), NOT_FOUND, "missing"),
    ("c", "Stats", cpb.CollectionStatsRequest(name=""), INVALID, "name"),
    ("v", "Upsert", upsert([rec(vector=vec(dim=DIM - 1))]), INVALID, "records[0].vector"),
    ("v", "Upsert", upsert([rec(), rec("y", vec(np.nan))]), INVALID, "records[1].vector"),
    ("v", "Upsert", upsert([rec(vector=vec(np.inf))]), INVALID, "records[0].vector"),
    ("v", "Upsert", upsert([rec(vector=vec(*[0.0] * DIM))]), INVALID, "records[0].vector"),
    ("v", "Upsert", upsert([]), INVALID, "records"),
    ("v", "Upsert", upsert([rec(""), rec("y")]), INVALID, "records[0].id"),
    ("v", "Upsert", upsert([rec("x"), rec("x")]), INVALID, "records[1].id"),
    ("v", "Upsert", upsert([rec("x" * 257)]), INVALID, "records[0].id"),
    ("v", "Upsert", upsert([rec(payload=b"p" * 1025)]), INVALID, "records[0].payload"),
    ("v", "Upsert", upsert([rec(str(i)) for i in range(51)]), INVALID, "records"),
    ("v", "Upsert", upsert([rec(tenants=[""])]), INVALID, "records[0].tenants[0]"),
    ("v", "Upsert", upsert([rec()], collection="missing"), NOT_FOUND, "missing"),
    ("v", "Upsert", upsert([rec()], tenant=""), INVALID, "tenant"),
    ("v", "Get", vpb.GetRequest(collection="c", tenant="alice"), INVALID, "ids"),
    ("v", "Get", vpb.GetRequest(collection="c", tenant="alice", ids=["a", "a"]), INVALID, "ids[1]"),
    (
        "v",
        "Get",
        vpb.GetRequest(collection="missing", tenant="alice", ids=["a"]),
        NOT_FOUND,
        "missing",
    ),
    ("v", "Delete", vpb.DeleteRequest(collection="c", tenant="alice", ids=[]), INVALID, "ids"),
    (
        "v",
        "Delete",
        vpb.DeleteRequest(collection="c", tenant="bob", ids=["a"]),
        grpc.StatusCode.PERMISSION_DENIED,
        "ids[0]",
    ),
    (
        "v",
        "Grant",
        vpb.GrantRequest(collection="c", tenant="alice", ids=["a"], to_tenant=""),
        INVALID,
        "to_tenant",
    ),
    (
        "v",
        "Grant",
        vpb.GrantRequest(collection="c", tenant="alice", ids=["zz"], to_tenant="bob"),
        NOT_FOUND,
        "ids[0]",
    ),
    (
        "v",
        "Revoke",
        vpb.RevokeRequest(collection="c", tenant="alice", ids=["a"], from_tenant="alice"),
        INVALID,
        "from_tenant",
    ),
    (
        "v",
        "Revoke",
        vpb.RevokeRequest(collection="c", tenant="alice", ids=["a"] * 2, from_tenant="bob"),
        INVALID,
        "ids[1]",
    ),
    ("v", "Search", search(k=0), INVALID, "k"),
    ("v", "Search", search(k=101), INVALID, "k"),
    ("v", "Search", search(vector=b"\x00" * 5), INVALID, "vector"),
    ("v", "Search", search(vector=vec(np.nan)), INVALID, "vector"),
    ("v", "Search", search(params={"gamma2": 1}), INVALID, "params.gamma2"),
    ("v", "Search", search(collection="missing"), NOT_FOUND, "missing"),
    ("v", "Search", search(tenant="\n"), INVALID, "tenant"),
    (
        "v",
        "SearchBatch",
        vpb.SearchBatchRequest(collection="c", tenant="alice", k=3),
        INVALID,
        "vectors",
    ),
    (
        "v",
        "SearchBatch",
        vpb.SearchBatchRequest(collection="c", tenant="alice", k=3, vectors=[vec(), vec(np.inf)]),
        INVALID,
        "vectors[1]",
    ),
    (
        "v",
        "SearchBatch",
        vpb.SearchBatchRequest(collection="c", tenant="alice", k=3, vectors=[vec()] * 51),
        INVALID,
        "vectors",
    ),
]


@pytest.mark.parametrize(
    "service,method,request_,code,field", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)]
)
def test_bad_input_gets_status_naming_field(
    stubs: tuple[collections_pb2_grpc.CollectionsStub, vectors_pb2_grpc.VectorsStub],
    service: str,
    method: str,
    request_: Any,
    code: grpc.StatusCode,
    field: str,
) -> None:
    collections, vectors = stubs
    stub = collections if service == "c" else vectors
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, method)(request_, timeout=30)
    details = info.value.details()
    assert info.value.code() == code, details
    assert details is not None and field in details
    # The server keeps serving, and nothing was written by the refused call.
    response = vectors.Search(search(), timeout=30)
    assert sorted(h.id for h in response.hits) == ["a", "b"]
