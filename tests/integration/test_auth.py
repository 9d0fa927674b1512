"""API keys: tenants outside the key's set are refused; admin keys may act for anyone."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from curacache.client import Client, PermissionDeniedError, UnauthenticatedError
from tests.server_harness import ThreadServer

KEYS = [
    {"key": "k-alice", "tenants": ["alice"]},
    {"key": "k-bob", "tenants": ["bob", "bob-team"]},
    {"key": "k-admin", "admin": True},
]


@pytest.fixture
def auth_server(start_server: Callable[..., ThreadServer]) -> ThreadServer:
    return start_server(**{"auth.keys": KEYS})


def test_keys_bound_to_tenants(auth_server: ThreadServer) -> None:
    with Client(auth_server.target, api_key="k-admin") as admin:
        admin.create_collection("c", 4, index="flat")
    with (
        Client(auth_server.target, api_key="k-alice") as alice,
        Client(auth_server.target, api_key="k-bob") as bob,
    ):
        alice.upsert("c", ["a"], np.ones((1, 4)), owner="alice")
        with pytest.raises(PermissionDeniedError, match="tenant"):
            alice.upsert("c", ["b"], np.ones((1, 4)), owner="bob")
        with pytest.raises(PermissionDeniedError, match="tenant"):
            bob.search("c", np.ones(4), "alice")
        with pytest.raises(PermissionDeniedError, match="admin"):
            alice.create_collection("d", 4)
        assert bob.search("c", np.ones(4), "bob-team") == []
        assert [h.id for h in alice.search("c", np.ones(4), "alice")] == ["a"]
    with Client(auth_server.target, api_key="k-admin") as admin:
        assert (
            admin.grant("c", ["a"], "bob", "carol") == 1
        )  # admin may act as any tenant, on any record
        assert admin.delete("c", ["a"], "bob") == 1  # ... and on records it does not own


def test_missing_or_unknown_key_is_unauthenticated(auth_server: ThreadServer) -> None:
    for key in (None, "wrong"):
        with (
            Client(auth_server.target, api_key=key) as c,
            pytest.raises(UnauthenticatedError, match="authorization"),
        ):
            c.list_collections()
    with Client(auth_server.target) as c:
        assert c.health() == "SERVING"  # health stays open for probes
