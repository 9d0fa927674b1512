"""The README's semantic-cache example, run as written: the backend simulator and the server
started by the README's own commands (its ports swapped for free ones), then its Python block."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

from tests.server_harness import ROOT, ProcessServer


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def _block(section: str, lang: str) -> str:
    blocks: list[str] = re.findall(rf"```{lang}\n(.*?)```", section, re.S)
    (block,) = blocks
    return block


def _commands(sh: str) -> list[str]:
    return [line.split("#")[0].strip() for line in sh.splitlines() if line.split("#")[0].strip()]


class FakeLLMProcess:
    """The README's `curacache fake-llm ...` line as a child process, on a free port."""

    def __init__(self, command: str) -> None:
        argv = shlex.split(command.rstrip("&").strip())
        assert argv[0] == ".venv/bin/curacache" and argv[1] == "fake-llm", argv
        self.readme_port = argv[argv.index("--port") + 1]
        argv[argv.index("--port") + 1] = "0"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "curacache.cli", *argv[1:]],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output += line
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = match.group(1)
                break
        else:
            raise RuntimeError(f"fake-llm did not start:\n{self.output}")
        threading.Thread(
            target=self.proc.stdout.read, daemon=True
        ).start()  # never block on a full pipe

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def test_readme_cache_example_runs_to_the_end(tmp_path: Path) -> None:
    section = _section("Semantic cache")
    commands = _commands(_block(section, "sh"))
    fake_line = next(c for c in commands if "curacache fake-llm" in c)
    run_line = next(c for c in commands if c.endswith("make run"))
    fake = FakeLLMProcess(fake_line)
    server = None
    try:
        # `make run` is `curacache serve` with the README's environment; only ports differ.
        env = dict(word.split("=", 1) for word in shlex.split(run_line)[:-2])
        env = {k: v.replace(f":{fake.readme_port}", f":{fake.port}") for k, v in env.items()}
        server = ProcessServer(["--data-dir", str(tmp_path / "data")], env=env)
        code = _block(section, "python").replace("127.0.0.1:50051", server.target)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md (Semantic cache)", "exec"), {"__name__": "readme"})
    finally:
        if server is not None:
            server.terminate()
        fake.stop()
    printed = out.getvalue().splitlines()
    assert re.match(r"(True|False) [a-z_]+ [\d.]+ [a-z_]+", printed[0]), printed[
        0
    ]  # the lookup and why
    assert "GenerateResult(cached=False" in printed[-1] and "stored=True" in printed[-1]
    assert len(printed) > 2  # the generated text arrived in chunks before the result
