"""Random upsert/grant/revoke/delete sequences by several tenants, through the real server, on
every index kind: no search or get ever returns a record the tenant cannot see, and every
visible record is found."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curacache.client import Client, InvalidArgumentError, NotFoundError, PermissionDeniedError
from curacache.index import INDEX_KINDS
from curacache.index.curator import CuratorAdapter
from tests.server_harness import ThreadServer

TENANTS = ("ann", "ben", "cat")
IDS = tuple(f"r{i}" for i in range(12))
DIM = 4
# Records of a tenant that none of TENANTS can see, upserted first: every search and get
# must skip them. On `curator` they also reach `train_size`, so the sequence runs on a trained
# clustering tree (branching 4 over 128 points), and with τ (`max_sl_size`) below
# len(IDS) a tenant's list splits and merges back as records come and go.
OUTSIDER = "zed"
OUTSIDER_RECORDS = 128
KIND_PARAMS: dict[str, dict[str, float]] = {
    "flat": {},
    "hnsw": {},
    "curator": {"train_size": OUTSIDER_RECORDS, "branching": 4, "max_sl_size": 8},
}
Op = tuple[str, str, list[str], Any]  # (operation, acting tenant, ids, other tenant(s))

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("upsert"),
            st.sampled_from(TENANTS),
            st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True),
            st.lists(st.sampled_from(TENANTS), max_size=2),
        ),
        st.tuples(
            st.just("grant"),
            st.sampled_from(TENANTS),
            st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True),
            st.sampled_from(TENANTS),
        ),
        st.tuples(
            st.just("revoke"),
            st.sampled_from(TENANTS),
            st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True),
            st.sampled_from(TENANTS),
        ),
        st.tuples(
            st.just("delete"),
            st.sampled_from(TENANTS),
            st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True),
            st.none(),
        ),
    ),
    min_size=1,
    max_size=14,
)

_names = itertools.count()


def test_every_index_kind_is_covered() -> None:
    assert set(KIND_PARAMS) == set(INDEX_KINDS)


@pytest.mark.parametrize("kind", sorted(KIND_PARAMS))
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=ops)
def test_no_leak_and_nothing_lost(
    server: ThreadServer, client: Client, kind: str, sequence: list[Op]
) -> None:
    name = f"p{next(_names)}"
    client.create_collection(name, DIM, metric="l2", index=kind, **KIND_PARAMS[kind])
    rng = np.random.default_rng(0)
    outsiders = [f"z{i}" for i in range(OUTSIDER_RECORDS)]
    client.upsert(name, outsiders, rng.standard_normal((len(outsiders), DIM)), owner=OUTSIDER)
    collection = server.server.db.get(name)
    assert collection.wait_for_background(timeout=60)
    if kind == "curator":  # the sequence must run on a trained tree, not the exact fallback
        assert isinstance(collection.index, CuratorAdapter) and collection.index.core.trained
    model: dict[str, tuple[str, set[str]]] = {}  # id -> (owner, access)
    for op, tenant, ids, other in sequence:
        apply(client, name, model, op, tenant, ids, other, rng)
        check(client, name, model)
    client.delete_collection(name)


def apply(
    client: Client,
    name: str,
    model: dict[str, tuple[str, set[str]]],
    op: str,
    tenant: str,
    ids: list[str],
    other: Any,
    rng: np.random.Generator,
) -> None:
    visible = [i for i in ids if i in model and tenant in model[i][1]]
    foreign = [i for i in visible if model[i][0] != tenant]
    if op == "upsert":
        taken = [i for i in ids if i in model and model[i][0] != tenant]
        try:
            client.upsert(
                name, ids, rng.standard_normal((len(ids), DIM)), owner=tenant, tenants=other
            )
            assert not taken, "upsert over another tenant's record was accepted"
            for i in ids:
                model[i] = (tenant, {tenant, *other})
        except PermissionDeniedError:
            assert taken
    elif op == "delete":
        try:
            n = client.delete(name, ids, tenant)
            assert not foreign and n == len(visible)
            for i in visible:
                del model[i]
        except PermissionDeniedError:
            assert foreign
    else:
        call = client.grant if op == "grant" else client.revoke
        try:
            call(name, ids, other, tenant)
        except NotFoundError:
            assert len(visible) < len(ids)
            return
        except PermissionDeniedError:
            assert foreign
            return
        except InvalidArgumentError:  # revoking the owner is refused, atomically
            assert op == "revoke" and any(model[i][0] == other for i in visible)
            return
        assert len(visible) == len(ids) and not foreign
        for i in ids:
            (model[i][1].add if op == "grant" else model[i][1].discard)(other)


def check(client: Client, name: str, model: dict[str, tuple[str, set[str]]]) -> None:
    for tenant in TENANTS:
        expected = {i for i, (_, access) in model.items() if tenant in access}
        hits = client.search(name, np.zeros(DIM), tenant, k=len(IDS))
        assert {h.id for h in hits} == expected
        assert {r.id for r in client.get(name, list(IDS), tenant)} == expected
