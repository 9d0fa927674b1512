"""The README's "Use it from any OpenAI client" section runs as written: its shell block starts
fake-llm, the service and the gateway; its Python and curl examples then hit the cache.
Only the ports change (free ones instead of 8000 / 50051 / 8080)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _section_blocks() -> dict[str, list[str]]:
    text = README.read_text()
    section = text.split("## Use it from any OpenAI client", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, list[str]] = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S):
        blocks.setdefault(lang, []).append(body)
    return blocks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_readme_gateway_section_runs_as_written(tmp_path: Path) -> None:
    blocks = _section_blocks()
    ports = {"8000": str(_free_port()), "50051": str(_free_port()), "8080": str(_free_port())}

    def localise(code: str) -> str:
        return re.sub(r"\b(8000|50051|8080)\b", lambda m: ports[m.group(1)], code)

    start, curl = blocks["sh"][0], blocks["sh"][1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    stack = subprocess.Popen(
        ["bash", "-c", localise(start) + "\nwait"],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        gateway = f"http://127.0.0.1:{ports['8080']}"
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{gateway}/healthz", timeout=5).status_code == 200:
                    break
            assert stack.poll() is None and time.monotonic() < deadline, (
                "the README's services did not come up"
            )
            time.sleep(0.5)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(localise(blocks["python"][0]), "README.md", "exec"), {})
        lines = out.getvalue().splitlines()
        assert lines[0].startswith("MISS ") and lines[1].startswith("HIT ")
        shown = subprocess.run(
            ["bash", "-c", localise(curl)], capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0 and re.search(r"(?im)^x-cache: HIT", shown.stdout), (
            shown.stdout
        )
        assert '"object":"chat.completion"' in shown.stdout.replace(" ", "")
    finally:
        os.killpg(stack.pid, signal.SIGTERM)
        try:
            stack.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait(30)
