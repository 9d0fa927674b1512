"""The set of collections: created, listed, dropped and rebuilt from the store at start-up."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from curacache.errors import AlreadyExists, NotFound
from curacache.index.params import resolve_params
from curacache.index.registry import DEFAULT_INDEX_KIND, get_kind
from curacache.server.collection import Collection
from curacache.server.placement_book import PlacementBook
from storage.base import DocumentStore
from storage.errors import CollectionExists
from storage.types import CollectionSpec

log = logging.getLogger("curacache.server")

# Indexes see cosine as inner product over unit vectors (the collection normalises).
RAW_METRIC = {"cosine": "ip", "ip": "ip", "l2": "l2"}


class VectorDB:
    def __init__(
        self,
        store: DocumentStore,
        *,
        default_index_kind: str = "",
        placement: PlacementBook | None = None,
    ) -> None:
        """`placement`: which collections this replica serves (None: every one)."""
        self.store = store
        self.placement = placement if placement is not None else PlacementBook(store)
        self.default_index_kind = default_index_kind or DEFAULT_INDEX_KIND
        get_kind(self.default_index_kind, field="default_index_kind")
        self._collections: dict[str, Collection] = {}
        self._lock = threading.RLock()  # re-entered: delete() -> get() -> open_existing()

    def load(self) -> None:
        """Rebuild every collection's index from the store."""
        for spec in self.store.list_collections():
            if self.placement.serves(spec.name):
                self._load(spec)

    def apply_placement(self, *, load: bool = True) -> None:
        """The placement map changed: drop from memory what this replica no longer serves
        (the store keeps it) and, with `load`, load what it serves now."""
        for collection in self.loaded():
            if not self.placement.serves(collection.spec.name):
                with self._lock:
                    self._collections.pop(collection.spec.name, None)
                collection.forget()
        for spec in self.store.list_collections() if load else ():
            self.open_existing(spec.name)

    def _load(self, spec: CollectionSpec) -> Collection:
        started = time.perf_counter()
        collection = self._open(spec)
        try:
            restored = collection.load()
        except (
            Exception
        ):  # an unusable snapshot must not keep the service down: the store is the truth
            log.exception("collection %s: snapshot unusable, rebuilding from the store", spec.name)
            collection = self._open(spec)
            restored = collection.load(use_snapshot=False)
        self._collections[spec.name] = collection
        log.info(
            "loaded collection %s (%s, %d records, %s) in %.2fs",
            spec.name,
            spec.index_kind,
            collection.stats().record_count,
            "snapshot + store catch-up" if restored else "rebuilt from the store",
            time.perf_counter() - started,
        )
        return collection

    def open_existing(self, name: str) -> bool:
        """Another replica created `name`: load it from the store (False if already known,
        or already gone again)."""
        with self._lock:
            if name in self._collections or not self.placement.serves(name):
                return False
            spec = self.store.get_collection(name)
            if spec is None:
                return False
            self._load(spec)
            return True

    def forget(self, name: str) -> None:
        """A logged drop of `name`: stop serving it — unless what this process serves is the
        collection created again after that drop (the log is applied after the fact, so the
        drop may come after this process, or another, made `name` anew)."""
        current = self.store.get_collection(name)
        with self._lock:
            collection = self._collections.get(name)
            if collection is None:
                return
            if current is not None and current.created_at == collection.spec.created_at:
                return
            del self._collections[name]
        collection.forget()

    def loaded(self) -> list[Collection]:
        """The collections this process serves now."""
        with self._lock:
            return list(self._collections.values())

    def find(self, name: str) -> Collection | None:
        return self._collections.get(name)

    def save_snapshots(self) -> int:
        """Snapshot every collection changed since its last snapshot; returns how many."""
        saved = 0
        for collection in list(self._collections.values()):
            try:
                saved += collection.save_snapshot()
            except (
                Exception
            ):  # one failing snapshot must not stop the others; the store stays the truth
                log.exception("snapshot of collection %s failed", collection.spec.name)
        return saved

    def create(
        self, name: str, *, dim: int, metric: str, index_kind: str, params: Mapping[str, float]
    ) -> tuple[CollectionSpec, str]:
        """Create and persist a collection; returns its spec and the change-log position."""
        self.placement.check(name)
        kind = get_kind(index_kind or self.default_index_kind, field="index.kind")
        resolved = resolve_params(kind.build_params, params, field="index.params")
        spec = CollectionSpec(name, dim, metric, kind.name, resolved, created_at=time.time())
        with self._lock:
            if name in self._collections:
                raise AlreadyExists(f"collection {name!r} already exists")
            collection = self._open(spec)
            try:
                position = self.store.create_collection(spec)
            except CollectionExists as exc:
                raise AlreadyExists(str(exc)) from exc
            self._collections[name] = collection
        return spec, position

    def get(self, name: str) -> Collection:
        """The collection; one this replica has not loaded yet is looked up in the store (the
        source of truth), so a collection another replica has just created is usable here
        before its log entry arrives."""
        collection = self._collections.get(name)
        if collection is None:
            self.placement.check(name)  # another group's: say which
            self.open_existing(name)  # False too when the log's tail loaded it meanwhile
            collection = self._collections.get(name)
        if collection is None:
            raise NotFound(f"collection {name!r} does not exist")
        return collection

    def list(self, *, internal: bool = False) -> list[CollectionSpec]:
        """The public collections by name; with `internal`, only the internal ones (the cache's
        `cache::entries`, whose colon no public name may contain: the public API cannot
        address them). On a replica of a placement group: every group's, from the store."""
        if self.placement.map is not None and self.placement.group:  # every group's
            every: list[CollectionSpec] = self.store.list_collections()
            return [s for s in every if (":" in s.name) == internal]
        specs = (c.spec for c in self._collections.values() if (":" in c.spec.name) == internal)
        return sorted(specs, key=lambda s: s.name)

    def delete(self, name: str) -> None:
        with self._lock:
            collection = self.get(name)
            collection.drop()
            del self._collections[name]

    def _open(self, spec: CollectionSpec) -> Collection:
        kind = get_kind(spec.index_kind, field="index.kind")
        index = kind.create(dim=spec.dim, metric=RAW_METRIC[spec.metric], params=spec.index_params)
        return Collection(spec, index, self.store)
