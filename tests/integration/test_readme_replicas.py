"""The README's "Running more than one" Python block, run as written against two replicas of
one store (its two ports swapped for the test servers')."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from pathlib import Path

from tests.server_harness import ThreadServer

ROOT = Path(__file__).resolve().parent.parent.parent


def test_readme_replica_example_runs(start_server: Callable[..., ThreadServer]) -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Running more than one", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    a, b = start_server(), start_server()
    code = code.replace("127.0.0.1:50051", a.target).replace("127.0.0.1:50052", b.target)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().strip() == "n1"
