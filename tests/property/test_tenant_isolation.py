"""Random upsert/grant/revoke/delete sequences by several tenants, through the real server:
no search or get ever returns a record the tenant cannot see, and every visible record is found."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curacache.client import Client, InvalidArgumentError, NotFoundError, PermissionDeniedError

TENANTS = ("ann", "ben", "cat")
IDS = tuple(f"r{i}" for i in range(8))
DIM = 4

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("upsert"),
            st.sampled_from(TENANTS),
            st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True),
            st.lists(st.sampled_from(TENANTS), max_size=2),
        ),
        st.tuples(
            st.just("grant"),
            st.sampled_from(TENANTS),
            st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True),
            st.sampled_from(TENANTS),
        ),
        st.tuples(
            st.just("revoke"),
            st.sampled_from(TENANTS),
            st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True),
            st.sampled_from(TENANTS),
        ),
        st.tuples(
            st.just("delete"),
            st.sampled_from(TENANTS),
            st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True),
            st.none(),
        ),
    ),
    min_size=1,
    max_size=14,
)

_names = itertools.count()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=ops)
def test_no_leak_and_nothing_lost(client: Client, sequence) -> None:
    name = f"p{next(_names)}"
    client.create_collection(name, DIM, metric="l2", index="flat")
    model: dict[str, tuple[str, set[str]]] = {}  # id -> (owner, access)
    rng = np.random.default_rng(0)
    for op, tenant, ids, other in sequence:
        apply(client, name, model, op, tenant, ids, other, rng)
        check(client, name, model)
    client.delete_collection(name)


def apply(client, name, model, op, tenant, ids, other, rng) -> None:
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


def check(client, name, model) -> None:
    for tenant in TENANTS:
        expected = {i for i, (_, access) in model.items() if tenant in access}
        hits = client.search(name, np.zeros(DIM), tenant, k=len(IDS))
        assert {h.id for h in hits} == expected
        assert {r.id for r in client.get(name, list(IDS), tenant)} == expected
