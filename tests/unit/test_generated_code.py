"""The committed generated gRPC code is exactly what scripts/gen_proto.py produces now."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import gen_proto  # noqa: E402


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    fresh = {p.name: p.read_text() for p in gen_proto.generate(tmp_path)}
    committed = {
        p.name: p.read_text() for p in (ROOT / "curacache" / "api" / "v1").iterdir() if p.is_file()
    }
    assert set(fresh) == set(committed), "files differ: run `make proto` and commit"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code {stale}: run `make proto` and commit"
