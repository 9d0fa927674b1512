"""RedisStore specifics: key layout, hash tags, error mapping, AOF durability across a crash."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis import exceptions as rexc
from redis.crc import key_slot

from storage import CollectionSpec, StoredRecord, StoreUnavailable
from storage.redis import RedisStore, _mapped
from tests.redis_server import RedisProcess, start_redis_server

pytestmark = pytest.mark.redis


def rec(rid: str, payload: bytes = b"p") -> StoredRecord:
    return StoredRecord(
        id=rid, vector=struct.pack("<2f", 1, 2), owner="o", tenants=("o",), payload=payload
    )


SPEC = CollectionSpec("docs", 2, "l2", "flat")


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    s = RedisStore(redis_url, prefix="cc")
    s.create_collection(SPEC)
    yield s
    s.close()


def test_key_layout_shares_one_slot(store: RedisStore, raw: redis.Redis) -> None:
    store.put_records("docs", [rec("a"), rec("b:c")])
    store.put_blob("docs", "centroids", b"x")
    found = raw.keys("cc:{docs}:*")
    keys = {k for k in found if isinstance(k, bytes)}
    assert len(keys) == len(found)  # the raw client does not decode: every key is bytes
    assert keys == {
        b"cc:{docs}:r:a",
        b"cc:{docs}:r:b:c",
        b"cc:{docs}:ids",
        b"cc:{docs}:bytes",
        b"cc:{docs}:b:centroids",
        b"cc:{docs}:blobs",
        b"cc:{docs}:spec",
        b"cc:{docs}:log",
    }
    assert len({key_slot(k) for k in keys}) == 1
    assert set(raw.hkeys("cc:{docs}:r:a")) == {b"v", b"o", b"t", b"p", b"m", b"n"}
    assert raw.hexists("cc:collections", "docs")


def test_delete_collection_leaves_no_keys(store: RedisStore, raw: redis.Redis) -> None:
    store.create_collection(CollectionSpec("other", 2, "l2", "flat"))
    store.put_records("docs", [rec(f"r{i}") for i in range(2500)])  # > one 1000-id page
    store.put_blob("docs", "b", b"x")
    store.put_records("other", [rec("r1")])
    assert store.delete_collection("docs") is True
    assert raw.keys("cc:{docs}*") == []
    assert raw.exists("cc:{other}:r:r1") == 1


def test_prefixes_isolate_stores(store: RedisStore, redis_url: str) -> None:
    other = RedisStore(redis_url, prefix="xx")
    try:
        assert other.list_collections() == []
        other.create_collection(SPEC)  # same name, different namespace
        store.put_records("docs", [rec("a")])
        assert other.count("docs") == 0
    finally:
        other.close()


def test_rejects_hash_tag_breaking_names(store: RedisStore) -> None:
    for bad in ("a}b", "{a", ""):
        with pytest.raises(ValueError):
            store.create_collection(CollectionSpec(bad, 2, "l2", "flat"))
    with pytest.raises(ValueError):
        RedisStore("redis://127.0.0.1:1", prefix="p{x}")


def test_injected_client(redis_url: str) -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(redis_url, client=redis.Redis.from_url(redis_url, decode_responses=True))
    client = redis.Redis.from_url(redis_url)
    s = RedisStore("ignored", client=client)
    s.ping()
    s.close()
    assert client.ping()  # a caller's client is left open
    client.close()


@pytest.mark.parametrize(
    "exc",
    [
        rexc.ConnectionError("down"),
        rexc.TimeoutError("slow"),
        rexc.BusyLoadingError("loading"),
        rexc.ReadOnlyError("READONLY replica"),
        rexc.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
    ],
)
def test_transient_errors_map_to_unavailable(exc: Exception) -> None:
    with pytest.raises(StoreUnavailable), _mapped():
        raise exc


def test_other_response_errors_pass_through() -> None:
    with pytest.raises(rexc.ResponseError), _mapped():
        raise rexc.ResponseError("WRONGTYPE Operation against a key")


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = start_redis_server(tmp_path / "redis")
    yield proc
    proc.stop()


def test_survives_crash_and_reconnects(private_server: RedisProcess) -> None:
    s = RedisStore(private_server.url)
    try:
        s.create_collection(SPEC)
        s.put_records("docs", [rec(f"r{i}", bytes([i])) for i in range(100)])
        s.put_blob("docs", "c", b"\x00snap")
        size = s.size_bytes("docs")
        private_server.kill()  # SIGKILL: only the fsynced AOF survives
        with pytest.raises(StoreUnavailable):
            s.count("docs")
        private_server.start()  # same port and data directory
        assert s.count("docs") == 100  # the same store reconnects by itself
        assert s.get_records("docs", ["r42"]) == {"r42": rec("r42", bytes([42]))}
        assert s.get_blob("docs", "c") == b"\x00snap" and s.size_bytes("docs") == size
    finally:
        s.close()
