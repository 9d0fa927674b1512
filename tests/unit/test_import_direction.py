"""DESIGN §1 dependency direction, checked on the import statements of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("curator", "cache", "storage", "curacache")

# package -> first-party packages it may import (prefix match on dotted module names)
ALLOWED = {
    "curator": ("curator",),
    "storage": ("storage",),
    "cache": ("cache",),
    "curacache.api": ("curacache.api",),
    "curacache.index": ("curacache.index", "curacache.errors", "curator"),
    "curacache.embed": ("curacache.embed", "curacache.errors"),
    "curacache.llm": ("curacache.llm", "curacache.errors"),
    "curacache.client": ("curacache.client", "curacache.api"),
    "curacache.gateway": ("curacache.gateway", "curacache.client"),
    "curacache.server": ("curacache", "cache", "storage", "curator"),
    "curacache.cli": ("curacache",),
    "curacache.errors": (),
    "curacache": (),  # the package root imports nothing, so `import curacache.client` stays light
}
THIRD_PARTY_BANNED = {
    "curator": ("grpc", "redis", "httpx", "storage"),
    "cache": ("grpc", "redis", "httpx", "faiss", "hnswlib", "sqlite3"),
    "storage": ("numpy", "grpc"),
    "curacache.client": ("faiss", "hnswlib", "redis", "sqlite3"),
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for package in FIRST_PARTY:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out.append((".".join(p for p in parts if p != "__init__"), path))
    return out


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _rule(module: str, table: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    best = max(
        (k for k in table if module == k or module.startswith(k + ".")), key=len, default=None
    )
    return None if best is None else table[best]


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("module,path", _modules(), ids=[m for m, _ in _modules()])
def test_imports_follow_the_dependency_direction(module: str, path: Path) -> None:
    allowed = _rule(module, ALLOWED)
    assert allowed is not None, f"{module}: no dependency rule; add it to ALLOWED"
    banned = _rule(module, THIRD_PARTY_BANNED) or ()
    for name in _imports(path):
        if name.split(".")[0] in FIRST_PARTY:
            assert _matches(name, allowed), f"{module} imports {name}"
        assert not _matches(name, banned), f"{module} imports {name}"
