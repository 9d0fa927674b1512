"""Placement in the server (DESIGN §6): replicas of one store in two groups; each loads and
serves only its group's collections, a request sent to the other group gets
FAILED_PRECONDITION naming the right one, the SDK given every replica routes by collection,
and a new map in the store moves collections between the groups' memories."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from curacache.cli import main
from curacache.client import Client, WrongGroupError
from curacache.placement import PlacementMap
from curacache.server.placement_book import save_placement
from storage.sqlite import SqliteStore
from storage.types import CollectionSpec, StoredRecord
from tests.server_harness import ThreadServer

DIM = 4
WAIT_S = 20.0


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {WAIT_S}s: {what}")
        time.sleep(0.02)


def test_each_group_serves_its_collections_and_the_sdk_routes_by_collection(
    start_server: Callable[..., ThreadServer],
) -> None:
    g1 = start_server(group="g1")
    g2 = start_server(group="g2")
    version1 = PlacementMap(version=1, groups=("g1", "g2"), assignment={"a": "g1", "b": "g2"})
    save_placement(g1.server.store, version1)
    _until(lambda: g2.server.db.placement.map == version1, "map on g2")
    _until(lambda: g1.server.db.placement.map == version1, "map on g1")

    with Client(g1.target) as c1:
        c1.create_collection("a", DIM, index="flat")
        with pytest.raises(WrongGroupError) as wrong:
            c1.create_collection("b", DIM, index="flat")
        assert wrong.value.group == "g2" and "'g2'" in str(wrong.value)

    data = np.eye(DIM, dtype=np.float32)
    with Client([g1.target, g2.target], consistency="read_your_writes") as c:
        c.create_collection("b", DIM, index="flat")  # routed to g2, whichever it tried first
        for name in ("a", "b"):
            for i in range(3):  # every call lands on the collection's group
                c.upsert(name, [f"{name}{i}"], data[i : i + 1], owner="t")
                assert [h.id for h in c.search(name, data[i], "t", k=1)] == [f"{name}{i}"]
        assert {x.name for x in c.list_collections()} == {"a", "b"}  # every group's
    # each group holds only its own collection in memory
    assert g1.server.db.find("a") is not None and g1.server.db.find("b") is None
    assert g2.server.db.find("b") is not None and g2.server.db.find("a") is None
    with Client(g2.target) as c2, pytest.raises(WrongGroupError):
        c2.search("a", data[0], "t")
    store = g1.server.store
    g1_replica, g2_replica = g1.server.replica, g2.server.replica
    assert g1_replica is not None and g2_replica is not None
    if store.stream_of("b"):  # Redis: a replica tails only its own collections' logs
        assert g1_replica.applied_position(store.stream_of("b")) == ""
        assert g1_replica.applied_position(store.stream_of("a")) != ""

    # a new map moves "b" to g1: g1 loads it from the store, g2 lets it go
    version2 = PlacementMap(version=2, groups=("g1", "g2"), assignment={"a": "g1", "b": "g1"})
    save_placement(g2.server.store, version2)
    _until(lambda: g1.server.db.find("b") is not None, "b loaded on g1")
    _until(lambda: g2.server.db.find("b") is None, "b dropped from g2's memory")
    with Client(g1.target) as c1:
        assert [h.id for h in c1.search("b", data[2], "t", k=1)] == ["b2"]
        c1.upsert("b", ["b9"], data[3:4], owner="t")  # tailed by g1 now
    if store.stream_of("b"):
        _until(lambda: g1_replica.applied_position(store.stream_of("b")) != "", "b tailed")
        _until(lambda: g2_replica.applied_position(store.stream_of("b")) == "", "b let go")
    with pytest.raises(ValueError):  # an older map is refused
        save_placement(g1.server.store, version1)


def test_the_placement_command_plans_and_stores_maps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SqliteStore(tmp_path / "data" / "curacache.sqlite3")
    try:
        for i, n in enumerate((40, 10, 10)):
            store.create_collection(CollectionSpec(f"c{i}", DIM, "l2", "flat"))
            vector = np.zeros(DIM, dtype="<f4").tobytes()
            store.put_records(
                f"c{i}", [StoredRecord(f"r{j}", vector, "t", ("t",)) for j in range(n)]
            )
    finally:
        store.close()
    where = ["--data-dir", str(tmp_path / "data")]
    assert main(["placement", "show", *where]) == 0
    assert "no placement map" in capsys.readouterr().out
    assert main(["placement", "set", *where, "--groups", "g1,g2", "--pin", "c1=g2"]) == 0
    first = PlacementMap.from_json(capsys.readouterr().out)
    assert first.version == 1 and set(first.assignment) == {"c0", "c1", "c2"}
    assert first.assignment["c1"] == "g2" and first.pinned == {"c1"}
    assert main(["placement", "set", *where, "--groups", "g1,g2,g3"]) == 0
    second = PlacementMap.from_json(capsys.readouterr().out)
    assert second.version == 2 and second.groups == ("g1", "g2", "g3")
    assert second.assignment["c1"] == "g2"  # pinned: stays
    assert main(["placement", "show", *where]) == 0
    assert PlacementMap.from_json(capsys.readouterr().out) == second
    assert main(["placement", "set", *where, "--groups", ""]) == 2
    assert main(["placement", "set", *where, "--groups", "g1", "--pin", "c0=nowhere"]) == 2
    assert "nowhere" in capsys.readouterr().err
