"""Which replica group holds which collection: pure placement logic (no I/O).

Past one machine's memory, collections are placed on replica groups (DESIGN.md §6). A Curator
collection is never split: its tree and the vectors its tenants share stay whole on one group,
so the unit of placement is the collection and the load a group carries is the sum of its
collections' sizes in bytes (collection counts say nothing about memory when sizes are Zipf).

Two placers, both deterministic functions of (collections, sizes, groups), so every replica and
every client that computes a placement gets the same answer:

- `RendezvousPlacer`: highest-random-weight hashing (Thaler & Ravishankar), optionally weighted
  (Schindelhauer & Schomaker's logarithmic method, score = w / -ln u). A join moves only what
  the new group wins, a leave only what the leaving group held: the least movement possible,
  but balance is whatever the hash gives, ignoring sizes.
- `BoundedLoadPlacer`: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
  "Consistent Hashing with Bounded Loads", SODA 2018) on a ring with virtual nodes, capacity
  ceil(c · total bytes / groups) with c = 1 + ε. A collection walks clockwise from its hash to
  the first group where it fits (else, for a giant, the first that is not full), so every
  group ends with load ≤ capacity - 1 + largest collection. `largest_first=True` is our
  size-aware variant: collections are placed in decreasing size, so the giants land first and
  the small ones fill the gaps; `pinned` keeps chosen collections where an earlier map put them.
  `rebalance` updates a stored map for a join or a leave instead of recomputing it, moving
  only the excess above the new capacity (the scheme bench/placement recommends).

`PlacementMap` is what the store holds and the SDK routes by: a version, the groups, and an
explicit collection → group table; a collection not in the table (created since the map was
computed) falls back to rendezvous hashing over the groups, which any client can compute.

Hashes are blake2b (stable across processes and Python versions), never the salted `hash()`.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


def stable_hash64(key: str) -> int:
    """A 64-bit hash of `key` that is the same in every process (blake2b, unsalted)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic): a bijection whose output
    bits each depend on every input bit, so hash(collection) ^ hash(group) scores independently
    per pair without one blake2b call per pair (10^4 collections × 17 groups in microseconds)."""
    x = x.copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _check_groups(groups: Sequence[str]) -> tuple[str, ...]:
    groups = tuple(groups)
    if not groups:
        raise ValueError("groups: at least one group is needed")
    if len(set(groups)) != len(groups):
        raise ValueError("groups: duplicate group names")
    return groups


def _check_sizes(sizes: Mapping[str, int]) -> None:
    for name, size in sizes.items():
        if size < 0:
            raise ValueError(f"sizes[{name!r}]: a size in bytes must be >= 0, got {size}")


@dataclass(frozen=True, kw_only=True)
class Placement:
    """The result of placing collections: who goes where, and the bytes each group carries."""

    assignment: dict[str, str]
    loads: dict[str, int]

    @property
    def balance(self) -> float:
        """max / mean bytes per group (1.0 is perfect; the issue's target is ≤ 1.10)."""
        total = sum(self.loads.values())
        return max(self.loads.values()) * len(self.loads) / total if total else 1.0


@dataclass(frozen=True, kw_only=True)
class BoundedPlacement(Placement):
    """A bounded-load placement, with the capacity (bytes) every group was held to."""

    capacity: int


def _loads(
    assignment: Mapping[str, str], sizes: Mapping[str, int], groups: Iterable[str]
) -> dict[str, int]:
    loads = dict.fromkeys(groups, 0)
    for name, group in assignment.items():
        loads[group] += sizes[name]
    return loads


def moved_bytes(
    before: Mapping[str, str], after: Mapping[str, str], sizes: Mapping[str, int]
) -> int:
    """Bytes of the collections whose group differs between two assignments (those a join or a
    leave makes a replica load; collections in only one of them are not counted)."""
    return sum(sizes[c] for c, g in before.items() if c in after and after[c] != g)


@dataclass(frozen=True, kw_only=True)
class RendezvousPlacer:
    """Highest-random-weight hashing; `weights` (group → relative capacity) default to 1."""

    weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for group, w in self.weights.items():
            if not (w > 0 and math.isfinite(w)):
                raise ValueError(f"weights[{group!r}]: must be a positive number, got {w}")

    def groups_of(self, collections: Sequence[str], groups: Sequence[str]) -> list[str]:
        """The winning group of each collection (one vectorised pass over all pairs)."""
        groups = _check_groups(groups)
        if not collections:
            return []
        ch = np.array([stable_hash64(c) for c in collections], dtype=np.uint64)
        gh = np.array([stable_hash64(g) for g in groups], dtype=np.uint64)
        u = _mix64(ch[:, None] ^ gh[None, :])
        if self.weights:
            # Logarithmic method: score = w / -ln(u), u uniform in (0, 1) from the top 53 bits,
            # so a group wins a share of collections proportional to its weight.
            w = np.array([self.weights.get(g, 1.0) for g in groups])
            unit = ((u >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
            winners = np.argmax(w[None, :] / -np.log(unit), axis=1)
        else:
            winners = np.argmax(u, axis=1)  # same order as the scores when all weights are 1
        return [groups[i] for i in winners]

    def group_of(self, collection: str, groups: Sequence[str]) -> str:
        return self.groups_of([collection], groups)[0]

    def place(self, sizes: Mapping[str, int], groups: Sequence[str]) -> Placement:
        _check_sizes(sizes)
        names = list(sizes)
        assignment = dict(zip(names, self.groups_of(names, groups), strict=True))
        return Placement(assignment=assignment, loads=_loads(assignment, sizes, groups))


@dataclass(frozen=True, kw_only=True)
class HashRing:
    """A consistent-hashing ring: `vnodes` points per group, sorted by position."""

    positions: tuple[int, ...]
    owners: tuple[str, ...]

    @classmethod
    def build(cls, *, groups: Sequence[str], vnodes: int) -> HashRing:
        if vnodes < 1:
            raise ValueError(f"vnodes: must be >= 1, got {vnodes}")
        points = sorted(
            (stable_hash64(f"{g}#{i}"), g) for g in _check_groups(groups) for i in range(vnodes)
        )
        return cls(positions=tuple(p for p, _ in points), owners=tuple(g for _, g in points))

    def walk(self, key: str) -> Iterable[str]:
        """Distinct groups in clockwise order from `key`'s hash: its successor first."""
        start = bisect.bisect_right(self.positions, stable_hash64(key))
        seen: set[str] = set()
        n = len(self.owners)
        for step in range(n):
            owner = self.owners[(start + step) % n]
            if owner not in seen:
                seen.add(owner)
                yield owner


@dataclass(frozen=True, kw_only=True)
class BoundedLoadPlacer:
    """Consistent hashing with bounded loads, loads in bytes.

    epsilon: capacity slack, c = 1 + epsilon (the paper's trade-off: a smaller ε balances
        better and moves more on a join or leave, about O(1/ε²) per update in its analysis).
    vnodes: ring points per group; more points give each group a more even arc.
    largest_first: place collections in decreasing size (size-aware variant) instead of in
        hash order (the paper's arbitrary but fixed order).
    """

    epsilon: float = 0.1
    vnodes: int = 128
    largest_first: bool = False

    def __post_init__(self) -> None:
        if not (self.epsilon >= 0 and math.isfinite(self.epsilon)):
            raise ValueError(f"epsilon: must be a finite number >= 0, got {self.epsilon}")
        if self.vnodes < 1:
            raise ValueError(f"vnodes: must be >= 1, got {self.vnodes}")

    def capacity(self, total_bytes: int, n_groups: int) -> int:
        """ceil(c · total / groups) in exact arithmetic: ε = 0.1 is the decimal 1/10 here, so
        1.1 · 1600 / 16 is 110, not float's 110.00000000000001 rounded up to 111."""
        c = 1 + Fraction(repr(self.epsilon))
        return math.ceil(c * total_bytes / n_groups)

    def place(
        self,
        sizes: Mapping[str, int],
        groups: Sequence[str],
        *,
        pinned: Mapping[str, str] | None = None,
    ) -> BoundedPlacement:
        """Place every collection in `sizes`; `pinned` (collection → group) are placed first,
        as given, and count towards their group's load. A pin to a group not in `groups`, or of
        a collection not in `sizes`, is ignored: that collection is placed like the others."""
        groups = _check_groups(groups)
        _check_sizes(sizes)
        capacity = self.capacity(sum(sizes.values()), len(groups))
        loads = dict.fromkeys(groups, 0)
        assignment: dict[str, str] = {}
        for name, group in (pinned or {}).items():
            if name in sizes and group in loads:
                assignment[name] = group
                loads[group] += sizes[name]
        ring = HashRing.build(groups=groups, vnodes=self.vnodes)
        hashes = {name: stable_hash64(name) for name in sizes if name not in assignment}
        if self.largest_first:
            order = sorted(hashes, key=lambda n: (-sizes[n], hashes[n], n))
        else:
            order = sorted(hashes, key=lambda n: (hashes[n], n))
        self._walk_in(order, sizes, ring, capacity, assignment, loads)
        return BoundedPlacement(assignment=assignment, loads=loads, capacity=capacity)

    def rebalance(
        self,
        previous: Mapping[str, str],
        sizes: Mapping[str, int],
        groups: Sequence[str],
        *,
        pinned: Collection[str] = (),
    ) -> BoundedPlacement:
        """Update an earlier assignment for new groups or sizes, moving only what must move.

        `place` recomputes from scratch, and a join shrinks the capacity of every group, so
        the fill order shifts and collections cascade between old groups (measured in
        bench/placement/README.md). The store keeps the map, so there is no need to: here a
        collection stays where `previous` put it unless its group left (it then walks the ring
        like a new collection, largest first) or its group is above capacity; then the group
        sheds whole collections (`_shed`). A join thus moves only the excess above the new,
        smaller capacity; a leave only the leaving group's collections. `pinned` collections
        are never shed. Every group ends within capacity - 1 + the largest collection, like
        `place`, except one whose pinned collections alone exceed that.
        """
        groups = _check_groups(groups)
        _check_sizes(sizes)
        capacity = self.capacity(sum(sizes.values()), len(groups))
        loads = dict.fromkeys(groups, 0)
        assignment = {c: g for c, g in previous.items() if c in sizes and g in loads}
        for name, group in assignment.items():
            loads[group] += sizes[name]
        hashes = {name: stable_hash64(name) for name in sizes if name not in assignment}
        orphans = sorted(hashes, key=lambda n: (-sizes[n], hashes[n], n))
        self._walk_in(
            orphans,
            sizes,
            HashRing.build(groups=groups, vnodes=self.vnodes),
            capacity,
            assignment,
            loads,
        )

        self._shed(sizes, capacity, assignment, loads, pinned)
        return BoundedPlacement(assignment=assignment, loads=loads, capacity=capacity)

    @staticmethod
    def _shed(
        sizes: Mapping[str, int],
        capacity: int,
        assignment: dict[str, str],
        loads: dict[str, int],
        pinned: Collection[str],
    ) -> None:
        """Move whole collections off the groups above capacity to the least-loaded group,
        until no such move is left.

        A move goes to a group that is not full and must leave it below the donor's load. The
        donor gives the smallest collection that clears its excess and fits the receiver's
        room, else the largest that fits, else the smallest that may overflow the receiver (a
        receiver overflowed so becomes a donor in turn). Why this ends, within the bound: each
        move strictly lowers the sum of squared loads; while a donor is above capacity - 1 +
        largest, some other group is below capacity (all loads sum to at most groups ·
        capacity) and every collection of the donor may go there. A group that was within
        capacity and received nothing gives nothing.
        """
        groups = sorted(loads)
        members: dict[str, set[str]] = {g: set() for g in groups}
        for name, group in assignment.items():
            if name not in pinned and sizes[name] > 0:
                members[group].add(name)
        while True:
            for donor in sorted(groups, key=lambda g: (-loads[g], g)):
                if loads[donor] <= capacity:
                    return  # the rest are within capacity too
                move, receiver = BoundedLoadPlacer._pick_move(
                    donor, members[donor], groups, sizes, loads, capacity
                )
                if move is not None:
                    members[donor].remove(move)
                    members[receiver].add(move)
                    assignment[move] = receiver
                    loads[donor] -= sizes[move]
                    loads[receiver] += sizes[move]
                    break
            else:
                return

    @staticmethod
    def _pick_move(
        donor: str,
        members: Collection[str],
        groups: Sequence[str],
        sizes: Mapping[str, int],
        loads: Mapping[str, int],
        capacity: int,
    ) -> tuple[str | None, str]:
        """The collection `donor` should give, and to whom (`_shed`'s rule); None if none."""
        receiver = min((g for g in groups if g != donor), key=lambda g: (loads[g], g))
        excess, room = loads[donor] - capacity, capacity - loads[receiver]
        if room <= 0:
            return None, receiver  # every other group is full
        movable = [c for c in members if loads[receiver] + sizes[c] < loads[donor]]
        fits = [c for c in movable if sizes[c] <= room]
        clearing = [c for c in fits if sizes[c] >= excess]
        if clearing:
            return min(clearing, key=lambda c: (sizes[c], c)), receiver
        if fits:
            return max(fits, key=lambda c: (sizes[c], c)), receiver
        if movable:
            return min(movable, key=lambda c: (sizes[c], c)), receiver
        return None, receiver

    @staticmethod
    def _walk_in(
        order: Iterable[str],
        sizes: Mapping[str, int],
        ring: HashRing,
        capacity: int,
        assignment: dict[str, str],
        loads: dict[str, int],
    ) -> None:
        """Put each collection of `order` on the first group clockwise where it fits (load +
        size ≤ capacity); if it fits nowhere (a giant), on the first group that is not full.

        The paper's balls have unit size, where "fits" and "not full" are one rule; with bytes,
        trying "fits" first keeps every group within capacity whenever the sizes allow it, and
        the fallback keeps the paper's guarantee: load ≤ capacity - 1 + largest collection.
        """
        for name in order:
            size, not_full, group = sizes[name], None, None
            for candidate in ring.walk(name):
                if loads[candidate] + size <= capacity:
                    group = candidate
                    break
                if not_full is None and loads[candidate] < capacity:
                    not_full = candidate
            # Some group is below capacity as long as this collection has bytes: the loads so
            # far sum to less than the total, at most n_groups · capacity. An empty collection
            # fits wherever a group is not above capacity; else it joins its ring successor.
            group = group or not_full or next(iter(ring.walk(name)))
            assignment[name] = group
            loads[group] += size


@dataclass(frozen=True, kw_only=True)
class PlacementMap:
    """The placement a store holds and clients route by.

    version: increases with every new map, so a replica can tell a client routing by an older
        map which group is right now.
    groups: the replica groups, in a stable order.
    assignment: collection → group for every collection placed when the map was computed.
    pinned: the collections an operator (or the size-aware planner) fixed to their group; they
        stay put when the map is recomputed.
    Collections not in `assignment` go where rendezvous hashing over `groups` sends them.
    """

    version: int
    groups: tuple[str, ...]
    assignment: Mapping[str, str]
    pinned: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.version < 0:
            raise ValueError(f"version: must be >= 0, got {self.version}")
        known = set(_check_groups(self.groups))
        for name, group in self.assignment.items():
            if group not in known:
                raise ValueError(f"assignment[{name!r}]: unknown group {group!r}")
        for name in self.pinned:
            if name not in self.assignment:
                raise ValueError(f"pinned: {name!r} has no entry in assignment")

    @classmethod
    def from_placement(
        cls, placement: Placement, *, version: int, pinned: Iterable[str] = ()
    ) -> PlacementMap:
        return cls(
            version=version,
            groups=tuple(placement.loads),
            assignment=dict(placement.assignment),
            pinned=frozenset(pinned),
        )

    def group_of(self, collection: str) -> str:
        """The group that serves `collection`."""
        group = self.assignment.get(collection)
        return group if group is not None else RendezvousPlacer().group_of(collection, self.groups)

    def loads(self, sizes: Mapping[str, int]) -> dict[str, int]:
        """Bytes per group under this map, for the collections in `sizes`."""
        unlisted = [c for c in sizes if c not in self.assignment]
        routed = RendezvousPlacer().groups_of(unlisted, self.groups)
        routed_map = dict(zip(unlisted, routed, strict=True))
        listed = {c: self.assignment[c] for c in sizes if c in self.assignment}
        return _loads({**listed, **routed_map}, sizes, self.groups)

    def pins(self) -> dict[str, str]:
        """The pinned collections with their groups, as `BoundedLoadPlacer.place` takes them."""
        return {name: self.assignment[name] for name in self.pinned}

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "groups": list(self.groups),
                "assignment": dict(sorted(self.assignment.items())),
                "pinned": sorted(self.pinned),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> PlacementMap:
        """Parse `to_json`'s output; a malformed map raises ValueError naming the field."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"placement map: not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise ValueError("placement map: expected a JSON object")
        version, groups = doc.get("version"), doc.get("groups")
        assignment, pinned = doc.get("assignment", {}), doc.get("pinned", [])
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError("version: expected an integer")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ValueError("groups: expected a list of strings")
        if not isinstance(assignment, dict) or not all(
            isinstance(g, str) for g in assignment.values()
        ):
            raise ValueError("assignment: expected an object of collection → group")
        if not isinstance(pinned, list) or not all(isinstance(p, str) for p in pinned):
            raise ValueError("pinned: expected a list of strings")
        return cls(
            version=version, groups=tuple(groups), assignment=assignment, pinned=frozenset(pinned)
        )
