"""Placement invariants over random collections, sizes, groups and slack: every collection lands
whole on one known group, the bounded-load bound holds in bytes, results do not depend on the
order anything is listed in, rendezvous moves only what a join or leave must move, and a
rebalance is a fixed point."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from curacache.placement import BoundedLoadPlacer, PlacementMap, RendezvousPlacer

names_st = st.text(alphabet="abcdefgh/-0123456789", min_size=1, max_size=8)
sizes_st = st.dictionaries(names_st, st.integers(0, 10_000), min_size=1, max_size=60)
groups_st = st.lists(
    st.text(alphabet="gxyz0123456789", min_size=1, max_size=4), min_size=1, max_size=7, unique=True
)
epsilon_st = st.sampled_from([0.0, 0.01, 0.1, 0.5, 2.0])


def _reversed(d: dict) -> dict:
    return dict(reversed(list(d.items())))


@settings(max_examples=150, deadline=None)
@given(sizes=sizes_st, groups=groups_st, epsilon=epsilon_st, largest_first=st.booleans())
def test_bounded_loads_place_everything_within_the_bound(
    sizes: dict[str, int], groups: list[str], epsilon: float, largest_first: bool
) -> None:
    placer = BoundedLoadPlacer(epsilon=epsilon, vnodes=8, largest_first=largest_first)
    p = placer.place(sizes, groups)
    assert set(p.assignment) == set(sizes)
    assert set(p.assignment.values()) <= set(groups)
    assert sum(p.loads.values()) == sum(sizes.values())
    assert max(p.loads.values()) <= max(p.capacity - 1 + max(sizes.values()), 0)
    # Deterministic, and independent of the order collections and groups are listed in.
    again = placer.place(_reversed(sizes), groups[::-1])
    assert again.assignment == p.assignment


@settings(max_examples=150, deadline=None)
@given(sizes=sizes_st, groups=groups_st, epsilon=epsilon_st, data=st.data())
def test_rebalance_keeps_the_bound_and_is_a_fixed_point(
    sizes: dict[str, int], groups: list[str], epsilon: float, data: st.DataObject
) -> None:
    placer = BoundedLoadPlacer(epsilon=epsilon, vnodes=8, largest_first=True)
    before = data.draw(groups_st, label="groups before")
    previous = placer.place(sizes, before).assignment
    p = placer.rebalance(previous, sizes, groups)
    assert set(p.assignment) == set(sizes)
    assert set(p.assignment.values()) <= set(groups)
    assert max(p.loads.values()) <= max(p.capacity - 1 + max(sizes.values()), 0)
    # A collection moved only if its group left, or sat on a group over the new capacity, or
    # on one that received collections in this rebalance (and so may have overflowed).
    old_loads = dict.fromkeys(groups, 0)
    for c, g in previous.items():
        if g in old_loads:
            old_loads[g] += sizes[c]
    moved = {c for c in sizes if p.assignment[c] != previous[c]}
    receivers = {p.assignment[c] for c in moved}
    for c in moved:
        g = previous[c]
        assert g not in old_loads or old_loads[g] > p.capacity or g in receivers
    assert placer.rebalance(p.assignment, sizes, groups).assignment == p.assignment
    assert placer.rebalance(_reversed(previous), sizes, groups[::-1]).assignment == p.assignment


@settings(max_examples=150, deadline=None)
@given(sizes=sizes_st, groups=groups_st, joiner=st.just("joiner"), data=st.data())
def test_rendezvous_join_and_leave_move_the_minimum(
    sizes: dict[str, int], groups: list[str], joiner: str, data: st.DataObject
) -> None:
    placer = RendezvousPlacer()
    base = placer.place(sizes, groups).assignment
    joined = placer.place(sizes, [*groups, joiner]).assignment
    assert all(joined[c] in (base[c], joiner) for c in sizes)
    if len(groups) > 1:
        leaver = data.draw(st.sampled_from(groups), label="leaver")
        left = placer.place(sizes, [g for g in groups if g != leaver]).assignment
        assert all(left[c] == base[c] for c in sizes if base[c] != leaver)


@settings(max_examples=100, deadline=None)
@given(sizes=sizes_st, groups=groups_st, version=st.integers(0, 2**40), data=st.data())
def test_placement_map_json_round_trip(
    sizes: dict[str, int], groups: list[str], version: int, data: st.DataObject
) -> None:
    p = BoundedLoadPlacer(vnodes=4).place(sizes, groups)
    pinned = data.draw(st.lists(st.sampled_from(sorted(sizes)), unique=True), label="pinned")
    m = PlacementMap.from_placement(p, version=version, pinned=pinned)
    back = PlacementMap.from_json(m.to_json())
    assert back == m
    assert all(back.group_of(c) == p.assignment[c] for c in sizes)
