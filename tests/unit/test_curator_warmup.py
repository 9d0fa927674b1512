"""warm_up() reaches every compiled entry point, so the server's start-up pays all compilation."""

from __future__ import annotations

import re
from pathlib import Path

import curator
import curator._kernels as kernels
import curator._writes as writes
from curator.warmup import ENTRY_POINTS, warm_up


def entry_points() -> set[tuple[str, str]]:
    """(module, kernel) for every compiled function Python code calls (the rest are reached
    only from inside compiled code, and compile with their caller)."""
    found = set()
    for path in Path(curator.__file__).parent.glob("*.py"):
        if path.name.startswith("_"):
            continue
        for module, name in re.findall(r"\b(_kernels|_writes)\.(\w+)\b", path.read_text()):
            found.add((module, name))
    return found


def test_warm_up_compiles_every_entry_point() -> None:
    points = entry_points()
    assert {("_kernels", "search"), ("_writes", "grant")} <= points
    assert warm_up() >= 0.0
    modules = {"_kernels": kernels, "_writes": writes}
    cold = sorted(f"{m}.{n}" for m, n in points if not getattr(modules[m], n).signatures)
    assert not cold, f"entry points warm_up never reached: {cold}"
    listed = {(k.py_func.__module__.rsplit(".", 1)[-1], k.py_func.__name__) for k in ENTRY_POINTS}
    assert points <= listed  # so the "already compiled" shortcut checks every one
    assert warm_up() == 0.0  # a second server in this process pays nothing
