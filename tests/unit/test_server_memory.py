"""The malloc settings `curacache serve` applies (glibc only)."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from curacache.server.memory import fix_mmap_threshold, limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="M_ARENA_MAX is glibc's")
def test_glibc_takes_the_arena_cap() -> None:
    assert ctypes.util.find_library("c") is not None
    assert limit_malloc_arenas(8) is True  # glibc's own per-core default: harmless here


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="M_MMAP_THRESHOLD is glibc's")
def test_glibc_takes_a_fixed_mmap_threshold() -> None:
    assert fix_mmap_threshold(32 * 2**20) is True  # where glibc's own threshold ends: harmless


def test_without_a_c_library_it_reports_not_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert limit_malloc_arenas(2) is False
    assert fix_mmap_threshold(4 * 2**20) is False
