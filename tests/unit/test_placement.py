"""curacache.placement: rendezvous and bounded-load hashing, the placement map (no I/O)."""

from __future__ import annotations

import bisect
import json
import math
import subprocess
import sys

import pytest

from curacache.placement import (
    BoundedLoadPlacer,
    HashRing,
    Placement,
    PlacementMap,
    RendezvousPlacer,
    moved_bytes,
    stable_hash64,
)

GROUPS = [f"g{i:02d}" for i in range(16)]


def zipf(n: int, s: float = 1.0, unit: int = 1000) -> dict[str, int]:
    return {f"col-{r}": round(unit * (n / r) ** s) for r in range(1, n + 1)}


def units(n: int) -> dict[str, int]:
    return {f"col-{i}": 1 for i in range(n)}


# -- hashing ----------------------------------------------------------------------------------


def test_stable_hash_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from curacache.placement import BoundedLoadPlacer, PlacementMap, stable_hash64;"
        "sizes = {f'c{i}': i * 7 % 13 + 1 for i in range(300)};"
        "p = BoundedLoadPlacer(epsilon=0.1).place(sizes, ['a', 'b', 'c']);"
        "print(stable_hash64('tenant/x'), PlacementMap.from_placement(p, version=1).to_json())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    assert outs.pop().split()[0] == str(stable_hash64("tenant/x"))


def test_stable_hash_is_pinned() -> None:
    # A change of hash function re-places every collection of every deployment: make it loud.
    assert stable_hash64("tenant/docs") == 0x5E893C978B133DE7


# -- rendezvous -------------------------------------------------------------------------------


def test_rendezvous_spreads_collections_evenly_by_count() -> None:
    names = [f"c{i}" for i in range(16_000)]
    winners = RendezvousPlacer().groups_of(names, GROUPS)
    counts = {g: winners.count(g) for g in GROUPS}
    # Binomial(16000, 1/16): mean 1000, sd ≈ 31; 6 sd either way.
    assert all(810 <= c <= 1190 for c in counts.values()), counts


def test_weighted_rendezvous_shares_follow_the_weights() -> None:
    names = [f"c{i}" for i in range(20_000)]
    winners = RendezvousPlacer(weights={"b": 2.0}).groups_of(names, ["a", "b", "c"])
    shares = {g: winners.count(g) / len(names) for g in "abc"}
    assert shares["b"] == pytest.approx(0.5, abs=0.02)
    assert shares["a"] == pytest.approx(0.25, abs=0.02)
    assert shares["c"] == pytest.approx(0.25, abs=0.02)


def test_rendezvous_join_moves_only_to_the_new_group_and_leave_only_from_the_old() -> None:
    sizes = zipf(2000)
    placer = RendezvousPlacer()
    base = placer.place(sizes, GROUPS).assignment
    joined = placer.place(sizes, [*GROUPS, "new"]).assignment
    left = placer.place(sizes, GROUPS[1:]).assignment
    assert {joined[c] for c in sizes if joined[c] != base[c]} == {"new"}
    assert {c for c in sizes if left[c] != base[c]} == {c for c in sizes if base[c] == GROUPS[0]}
    # About 1/17 of the collections move to the new group.
    moved = sum(joined[c] != base[c] for c in sizes)
    assert 0.04 < moved / len(sizes) < 0.08


def test_rendezvous_does_not_depend_on_the_order_of_groups() -> None:
    names = [f"c{i}" for i in range(500)]
    placer = RendezvousPlacer(weights={"g03": 3.0})
    assert placer.groups_of(names, GROUPS) == placer.groups_of(names, GROUPS[::-1])


# -- bounded loads ----------------------------------------------------------------------------


def test_bounded_loads_keep_the_bound_in_bytes() -> None:
    sizes = zipf(3000, s=1.0)
    for epsilon in (0.0, 0.05, 0.25, 1.0):
        for largest_first in (False, True):
            placer = BoundedLoadPlacer(epsilon=epsilon, largest_first=largest_first)
            p = placer.place(sizes, GROUPS)
            assert set(p.assignment) == set(sizes)
            assert p.capacity == math.ceil((1 + epsilon) * sum(sizes.values()) / len(GROUPS))
            assert sum(p.loads.values()) == sum(sizes.values())
            assert max(p.loads.values()) <= p.capacity - 1 + max(sizes.values())


def test_unit_sizes_meet_the_papers_bound_exactly() -> None:
    p = BoundedLoadPlacer(epsilon=0.1).place(units(1600), GROUPS)
    assert p.capacity == 110
    assert max(p.loads.values()) <= 110


def test_a_huge_slack_is_plain_consistent_hashing() -> None:
    """With ε large enough that no group fills, each collection goes to the owner of the first
    ring point after its hash — checked against a direct scan of the ring."""
    groups = ["a", "b", "c", "d"]
    sizes = units(400)
    p = BoundedLoadPlacer(epsilon=100.0, vnodes=8).place(sizes, groups)
    points = sorted((stable_hash64(f"{g}#{i}"), g) for g in groups for i in range(8))
    positions = [pos for pos, _ in points]
    for name in sizes:
        successor = points[bisect.bisect_right(positions, stable_hash64(name)) % len(points)][1]
        assert p.assignment[name] == successor


def test_ring_walk_visits_each_group_once_successor_first() -> None:
    ring = HashRing.build(groups=GROUPS, vnodes=4)
    walk = list(ring.walk("some-collection"))
    assert sorted(walk) == sorted(GROUPS)
    i = bisect.bisect_right(ring.positions, stable_hash64("some-collection")) % len(ring.owners)
    assert walk[0] == ring.owners[i]


def test_empty_collections_and_an_empty_total_are_placed() -> None:
    p = BoundedLoadPlacer().place({"a": 0, "b": 0}, ["g1", "g2"])
    assert set(p.assignment) == {"a", "b"} and p.capacity == 0
    q = BoundedLoadPlacer(epsilon=0.0).place({"x": 5, "y": 5, "z": 0}, ["g1", "g2"])
    assert set(q.assignment) == {"x", "y", "z"}
    assert sorted(q.loads.values()) == [5, 5]


def test_pinned_collections_stay_and_count_towards_the_load() -> None:
    sizes = zipf(500)
    pins = {"col-1": "g05", "col-2": "g05", "col-3": "gone"}
    p = BoundedLoadPlacer(epsilon=0.1).place(sizes, GROUPS, pinned=pins)
    assert p.assignment["col-1"] == p.assignment["col-2"] == "g05"
    assert p.assignment["col-3"] in GROUPS  # a pin to a group that left is ignored
    # g05 is over capacity with the two giants: nothing else is put there.
    assert {c for c, g in p.assignment.items() if g == "g05"} == {"col-1", "col-2"}


def test_rebalance_on_a_join_moves_only_the_excess_and_only_to_underfull_groups() -> None:
    sizes = zipf(3000, s=0.8)
    placer = BoundedLoadPlacer(epsilon=0.1, largest_first=True)
    base = placer.place(sizes, GROUPS)
    joined = placer.rebalance(base.assignment, sizes, [*GROUPS, "new"])
    excess = sum(max(0, load - joined.capacity) for load in base.loads.values())
    donors = sum(load > joined.capacity for load in base.loads.values())
    moved = moved_bytes(base.assignment, joined.assignment, sizes)
    # Each donor sheds its excess, overshooting by less than one collection.
    assert excess <= moved <= excess + donors * max(sizes.values())
    assert max(joined.loads.values()) <= joined.capacity
    for c in sizes:
        if joined.assignment[c] != base.assignment[c]:
            assert base.loads[base.assignment[c]] > joined.capacity


def test_rebalance_on_a_leave_moves_only_the_leaving_groups_collections() -> None:
    sizes = zipf(3000, s=0.8)
    placer = BoundedLoadPlacer(epsilon=0.1, largest_first=True)
    base = placer.place(sizes, GROUPS)
    left = placer.rebalance(base.assignment, sizes, GROUPS[1:])
    moved = {c for c in sizes if left.assignment[c] != base.assignment[c]}
    assert moved == {c for c in sizes if base.assignment[c] == GROUPS[0]}
    assert max(left.loads.values()) <= left.capacity


def test_rebalance_places_new_collections_and_keeps_pinned_ones() -> None:
    sizes = units(320)
    placer = BoundedLoadPlacer(epsilon=0.0)
    previous = dict.fromkeys(sizes, "g00")  # everything piled on one group
    p = placer.rebalance(previous, {**sizes, "fresh": 1}, GROUPS, pinned={"col-0"})
    assert "fresh" in p.assignment
    assert p.assignment["col-0"] == "g00"
    assert max(p.loads.values()) <= p.capacity == 21


def test_a_giant_that_fits_nowhere_else_stays_and_its_group_stays_over() -> None:
    sizes = {"giant": 1000, **{f"s{i}": 10 for i in range(30)}}
    placer = BoundedLoadPlacer(epsilon=0.1)
    p = placer.rebalance({}, sizes, ["a", "b", "c"])
    home = p.assignment["giant"]
    assert p.loads[home] == 1000  # its small neighbours were shed
    assert placer.rebalance(p.assignment, sizes, ["a", "b", "c"]).assignment == p.assignment


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(epsilon=-0.1), "epsilon"),
        (dict(epsilon=math.nan), "epsilon"),
        (dict(vnodes=0), "vnodes"),
    ],
)
def test_bounded_placer_rejects_bad_parameters(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BoundedLoadPlacer(**kwargs)


def test_bad_groups_sizes_and_weights_name_the_field() -> None:
    with pytest.raises(ValueError, match="groups"):
        BoundedLoadPlacer().place({"a": 1}, [])
    with pytest.raises(ValueError, match="groups"):
        RendezvousPlacer().place({"a": 1}, ["g", "g"])
    with pytest.raises(ValueError, match=r"sizes\['a'\]"):
        BoundedLoadPlacer().place({"a": -1}, ["g"])
    with pytest.raises(ValueError, match=r"weights\['g'\]"):
        RendezvousPlacer(weights={"g": 0.0})


def test_balance_is_max_over_mean() -> None:
    p = Placement(assignment={}, loads={"a": 30, "b": 10})
    assert p.balance == pytest.approx(1.5)


# -- the placement map ------------------------------------------------------------------------


def test_placement_map_round_trips_through_json() -> None:
    sizes = zipf(200)
    p = BoundedLoadPlacer(epsilon=0.1).place(sizes, GROUPS)
    m = PlacementMap.from_placement(p, version=7, pinned=["col-1"])
    back = PlacementMap.from_json(m.to_json())
    assert back == m
    assert back.pins() == {"col-1": p.assignment["col-1"]}
    assert all(back.group_of(c) == p.assignment[c] for c in sizes)
    assert json.loads(m.to_json())["version"] == 7


def test_an_unlisted_collection_routes_by_rendezvous() -> None:
    m = PlacementMap(version=1, groups=("a", "b", "c"), assignment={"x": "b"})
    assert m.group_of("x") == "b"
    assert m.group_of("new-one") == RendezvousPlacer().group_of("new-one", ["a", "b", "c"])


@pytest.mark.parametrize(
    "doc, field",
    [
        ("[1]", "placement map"),
        ("{not json", "placement map"),
        ('{"version": "1", "groups": ["a"]}', "version"),
        ('{"version": true, "groups": ["a"]}', "version"),
        ('{"version": 1, "groups": "a"}', "groups"),
        ('{"version": 1, "groups": []}', "groups"),
        ('{"version": 1, "groups": ["a"], "assignment": {"x": 3}}', "assignment"),
        ('{"version": 1, "groups": ["a"], "assignment": {"x": "b"}}', "assignment"),
        ('{"version": 1, "groups": ["a"], "pinned": ["x"]}', "pinned"),
        ('{"version": -1, "groups": ["a"]}', "version"),
    ],
)
def test_a_malformed_map_is_rejected_naming_the_field(doc: str, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PlacementMap.from_json(doc)


def test_map_loads_count_listed_and_unlisted_collections() -> None:
    m = PlacementMap(version=1, groups=("a", "b"), assignment={"x": "a"})
    sizes = {"x": 5, "y": 7}
    expected = {"a": 5, "b": 0}
    expected[m.group_of("y")] += 7
    assert m.loads(sizes) == expected
