"""The malloc arena cap `curacache serve` applies (glibc only)."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from curacache.server.memory import limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="M_ARENA_MAX is glibc's")
def test_glibc_takes_the_arena_cap() -> None:
    assert ctypes.util.find_library("c") is not None
    assert limit_malloc_arenas(8) is True  # glibc's own per-core default: harmless here


def test_without_a_c_library_it_reports_not_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert limit_malloc_arenas(2) is False
