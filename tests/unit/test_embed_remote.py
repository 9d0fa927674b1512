"""OpenAIEmbedder against an in-test OpenAI-compatible server (httpx.MockTransport)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from curacache.embed.errors import EmbeddingError
from curacache.embed.remote import OpenAIEmbedder
from curacache.errors import Unavailable

DIM = 4


def _vector(text: str) -> list[float]:
    return [float(len(text)), 1.0, 0.0, 2.0]  # deliberately not normalised


def fake_server(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(t)}
            for i, t in enumerate(body["input"])
        ]
        data.reverse()  # the API does not promise order: clients must sort by index
        return httpx.Response(200, json={"object": "list", "data": data, "model": body["model"]})

    return httpx.MockTransport(handle)


async def test_request_shape_order_and_normalisation() -> None:
    seen: list[httpx.Request] = []
    emb = OpenAIEmbedder(
        base_url="http://gpu:8000/",
        model="bge",
        dim=DIM,
        api_key="sk-x",
        transport=fake_server(seen),
    )
    texts = ["a", "bbb", "cc"]
    out = await emb.embed(texts)
    await emb.aclose()

    (req,) = seen
    assert req.method == "POST" and str(req.url) == "http://gpu:8000/v1/embeddings"
    assert req.headers["authorization"] == "Bearer sk-x"
    assert json.loads(req.content) == {"model": "bge", "input": texts}
    want = np.array([_vector(t) for t in texts], dtype=np.float32)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert out.dtype == np.float32 and out.shape == (3, DIM)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert emb.name == "openai:bge" and emb.dim == DIM


async def test_base_url_with_v1_and_no_key() -> None:
    seen: list[httpx.Request] = []
    emb = OpenAIEmbedder(
        base_url="http://gpu:8000/v1", model="m", dim=DIM, transport=fake_server(seen)
    )
    await emb.embed(["x"])
    assert (
        str(seen[0].url) == "http://gpu:8000/v1/embeddings"
        and "authorization" not in seen[0].headers
    )
    assert (await emb.embed([])).shape == (0, DIM) and len(seen) == 1  # no request for nothing


def _respond(status: int, body: object) -> httpx.MockTransport:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.MockTransport(lambda request: httpx.Response(status, content=content))


def _raise(exc: Exception) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    "transport,match",
    [
        (_respond(503, {"error": {"message": "overloaded"}}), "HTTP 503.*overloaded"),
        (_respond(200, b"<html>not json"), "invalid JSON"),
        (
            _respond(200, {"data": [{"index": 0, "embedding": [1.0, 0, 0, 0]}]}),
            "1 embeddings for 2 inputs",
        ),
        (
            _respond(
                200,
                {
                    "data": [
                        {"index": 0, "embedding": [1.0, 0]},
                        {"index": 1, "embedding": [1.0, 0]},
                    ]
                },
            ),
            "shape",
        ),
        (_respond(200, {"data": [{"index": 0, "embedding": [1.0] * 4}] * 2}), "index"),
        (_respond(200, {"data": [{"index": 0}, {"index": 1}]}), "malformed"),
        (_raise(httpx.ConnectError("connection refused")), "unreachable"),
        (_raise(httpx.ReadTimeout("slow")), "timed out"),
    ],
    ids=["http-503", "bad-json", "count", "dim", "dup-index", "no-embedding", "connect", "timeout"],
)
async def test_errors_become_embedding_error(transport: httpx.MockTransport, match: str) -> None:
    emb = OpenAIEmbedder(base_url="http://gpu:8000", model="m", dim=DIM, transport=transport)
    with pytest.raises(EmbeddingError, match=match) as info:
        await emb.embed(["one", "two"])
    assert "http://gpu:8000/v1/embeddings" in str(info.value)
    assert isinstance(info.value, Unavailable)  # the server maps it to UNAVAILABLE
    await emb.aclose()


async def test_only_a_bounded_prefix_of_each_text_is_sent() -> None:
    seen: list[httpx.Request] = []
    emb = OpenAIEmbedder(
        base_url="http://gpu:8000", model="bge", dim=DIM, transport=fake_server(seen), max_chars=10
    )
    await emb.embed(["short", "x" * 1_000_000])
    await emb.aclose()
    assert json.loads(seen[0].content)["input"] == ["short", "x" * 10]
