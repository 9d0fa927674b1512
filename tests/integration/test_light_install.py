"""`pip install curacache` (no extras) is the SDK and the gateway: building it in a fresh venv
pulls in none of the service's heavy dependencies, and the gateway starts and answers there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "numba",
    "faiss",
    "hnswlib",
    "onnxruntime",
    "sklearn",
    "redis",
    "httpx",
    "tokenizers",
    "onnx",
)

CHECK = """
import importlib.util, subprocess, sys, urllib.request, re
heavy = {heavy!r}
installed = [m for m in heavy if importlib.util.find_spec(m) is not None]
assert not installed, f"installed with the light variant: {{installed}}"
import curacache.client, curacache.gateway.app  # noqa: F401
loaded = [m for m in heavy if m in sys.modules]
assert not loaded, f"imported: {{loaded}}"
proc = subprocess.Popen([sys.executable, "-m", "curacache.cli", "gateway", "--listen", "127.0.0.1:0",
                         "--server", "127.0.0.1:9"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
try:
    line = proc.stdout.readline()
    port = int(re.search(r"127\\.0\\.0\\.1:(\\d+)/v1", line).group(1))
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{{port}}/healthz", timeout=30)
        raise AssertionError("healthz answered 200 with no service behind it")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503, exc.code
finally:
    proc.terminate()
    proc.wait(30)
print("light install ok")
"""


@pytest.mark.timeout(900)
def test_light_install_is_sdk_and_gateway_only(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(ROOT)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=840,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        env=env,
    )
    names = {re.split(r"[=<>]", line)[0].lower() for line in listed.stdout.splitlines()}
    assert not names & {"numba", "faiss-cpu", "hnswlib", "onnxruntime", "scikit-learn"}, sorted(
        names
    )
    run = subprocess.run(
        [str(python), "-c", CHECK.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0 and "light install ok" in run.stdout, run.stdout + run.stderr


def test_the_sdk_and_gateway_import_nothing_of_the_server() -> None:
    """The same check in this environment (fast): importing them loads no server package."""
    code = (
        "import sys, curacache.client, curacache.gateway.app, curacache.cli; "
        f"bad = [m for m in {(*HEAVY, 'cache', 'storage', 'curator', 'curacache.server')!r} if m in sys.modules]; "
        "assert not bad, bad"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
