"""Placement in the server: which collections this replica loads and serves (DESIGN §6).

The map (`curacache.placement.PlacementMap`: groups, collection → group, the rest by
rendezvous hashing) lives in the store, as an announced blob of the internal collection
`placement::map`, so every replica reads the same one and the change log tells them when it
changes. A replica started with a group (`serve --group NAME`) loads and serves only the
collections the map gives its group; a request for another group's collection gets
FAILED_PRECONDITION naming the right group (`curacache.errors.WrongGroup`). Without a group,
or while the store holds no map, a replica serves every collection. Internal collections
(the cache's, the map's own: names with a colon) are served by every replica.
"""

from __future__ import annotations

import logging
import time

from curacache.errors import WrongGroup
from curacache.placement import BoundedLoadPlacer, PlacementMap
from storage.base import DocumentStore
from storage.errors import CollectionExists
from storage.types import CollectionSpec

log = logging.getLogger("curacache.placement")

PLACEMENT_COLLECTION = "placement::map"
MAP_BLOB = "map"


class PlacementBook:
    """This replica's group and the store's current placement map."""

    def __init__(self, store: DocumentStore, group: str = "") -> None:
        self._store = store
        self.group = group
        self._map: PlacementMap | None = None

    @property
    def map(self) -> PlacementMap | None:
        return self._map

    def load(self) -> PlacementMap | None:
        """Read the map from the store (blocking); None while there is none."""
        if self._store.get_collection(PLACEMENT_COLLECTION) is None:
            self._map = None
            return None
        raw = self._store.get_blob(PLACEMENT_COLLECTION, MAP_BLOB)
        self._map = PlacementMap.from_json(raw) if raw is not None else None
        if self._map is not None and self.group and self.group not in self._map.groups:
            log.warning(
                "group %r is not in the placement map %s: serving no collection",
                self.group,
                list(self._map.groups),
            )
        return self._map

    def serves(self, collection: str) -> bool:
        if not self.group or self._map is None or ":" in collection:
            return True
        return self._map.group_of(collection) == self.group

    def check(self, collection: str) -> None:
        """WrongGroup unless this replica serves `collection`."""
        if not self.serves(collection):
            assert self._map is not None
            raise WrongGroup(collection, self._map.group_of(collection), self.group)


def save_placement(store: DocumentStore, placement: PlacementMap) -> str:
    """Store `placement` as the map every replica follows (blocking); returns its log position.
    Refuses a map whose version is not above the stored one's (ValueError)."""
    try:
        store.create_collection(
            CollectionSpec(PLACEMENT_COLLECTION, 1, "l2", "flat", {}, created_at=time.time())
        )
    except CollectionExists:
        raw = store.get_blob(PLACEMENT_COLLECTION, MAP_BLOB)
        if raw is not None and PlacementMap.from_json(raw).version >= placement.version:
            raise ValueError(
                f"version: must be above the stored map's {PlacementMap.from_json(raw).version}"
            ) from None
    return store.put_blob(
        PLACEMENT_COLLECTION, MAP_BLOB, placement.to_json().encode(), announce=True
    )


def stored_placement(store: DocumentStore) -> PlacementMap | None:
    """The map the store holds now (blocking), or None."""
    return PlacementBook(store).load()


def plan_placement(
    store: DocumentStore, groups: list[str], pins: dict[str, str] | None = None
) -> PlacementMap:
    """A new map of every public collection over `groups`, by their stored bytes (blocking):
    the stored map rebalanced (only the excess above the new capacity moves, and a leaving
    group's collections: the scheme bench/placement measures), or a first placement
    (bounded-load consistent hashing, largest first). `pins` fixes collections to groups."""
    pins = dict(pins or {})
    for name, group in pins.items():
        if group not in groups:
            raise ValueError(f"pin {name}={group}: {group!r} is not one of the groups")
    sizes = {
        s.name: store.size_bytes(s.name) for s in store.list_collections() if ":" not in s.name
    }
    previous = stored_placement(store)
    placer = BoundedLoadPlacer(largest_first=True)
    pinned = set(pins) | (set(previous.pinned) if previous else set())
    if previous is None:
        placed = placer.place(sizes, groups, pinned=pins)
    else:
        earlier = {**previous.assignment, **pins}
        placed = placer.rebalance(earlier, sizes, groups, pinned=pinned & set(sizes))
    return PlacementMap(
        version=(previous.version + 1) if previous else 1,
        groups=tuple(groups),
        assignment=dict(placed.assignment),
        pinned=frozenset(pinned & set(placed.assignment)),
    )
