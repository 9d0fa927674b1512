"""BatchingEmbedder merges concurrent calls into few forward passes, exactly transparently."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from curacache.embed.base import HashingEmbedder
from curacache.embed.batching import BatchingEmbedder
from curacache.embed.errors import EmbeddingError


class CountingEmbedder:
    """Records every forward pass; runs it in a worker thread like the real model."""

    def __init__(self, *, delay: float = 0.01, fail_on: str | None = None) -> None:
        self._hash = HashingEmbedder(dim=32)
        self.dim, self.name = 32, "counting"
        self.calls: list[list[str]] = []
        self.threads: set[int] = set()
        self.delay, self.fail_on = delay, fail_on
        self.closed = False

    def _forward(self, texts: list[str]) -> np.ndarray:
        self.threads.add(threading.get_ident())
        threading.Event().wait(self.delay)  # the "model" takes a while
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError("model exploded")
        return self._hash.embed_sync(texts)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return await asyncio.to_thread(self._forward, list(texts))

    async def aclose(self) -> None:
        self.closed = True


TEXTS = [f"question number {i} about topic {i % 7}" for i in range(50)]


async def test_concurrent_calls_equal_one_by_one_results_with_few_passes() -> None:
    reference = HashingEmbedder(dim=32)
    expected = [await reference.embed([t]) for t in TEXTS]

    inner = CountingEmbedder()
    batcher = BatchingEmbedder(inner=inner, max_batch=64, max_wait_ms=5)
    results = await asyncio.gather(*(batcher.embed([t]) for t in TEXTS))

    for got, want in zip(results, expected, strict=True):
        assert got.shape == (1, 32)
        assert np.array_equal(got, want)
    assert batcher.passes == len(inner.calls)
    assert len(inner.calls) <= 3, f"{len(inner.calls)} forward passes for 50 concurrent calls"
    assert sum(len(c) for c in inner.calls) == 50
    assert threading.get_ident() not in inner.threads  # the pass ran off the event loop
    await batcher.aclose()
    assert inner.closed


async def test_max_batch_is_respected_and_multi_text_requests_stay_whole() -> None:
    inner = CountingEmbedder()
    batcher = BatchingEmbedder(inner=inner, max_batch=8, max_wait_ms=5)
    requests = [TEXTS[i : i + 3] for i in range(0, 30, 3)]  # 10 requests of 3 texts
    results = await asyncio.gather(*(batcher.embed(r) for r in requests))
    for req, got in zip(requests, results, strict=True):
        assert np.array_equal(got, HashingEmbedder(dim=32).embed_sync(req))
    assert all(len(c) <= 8 for c in inner.calls)
    assert (
        len(inner.calls) >= 4
    )  # 30 texts cannot fit in fewer passes of <= 8 (whole requests of 3)
    big = await batcher.embed(TEXTS[:20])  # a request above max_batch goes alone, unsplit
    assert big.shape == (20, 32) and inner.calls[-1] == TEXTS[:20]


async def test_a_lone_request_waits_for_company_only_while_requests_come_together() -> None:
    inner = CountingEmbedder(delay=0)
    batcher = BatchingEmbedder(inner=inner, max_batch=2, max_wait_ms=60_000)
    for text in TEXTS[:3]:  # one at a time: each goes at once (a 60 s wait would time out)
        await asyncio.wait_for(batcher.embed([text]), 10)
    assert inner.calls == [[t] for t in TEXTS[:3]]
    await asyncio.gather(batcher.embed([TEXTS[3]]), batcher.embed([TEXTS[4]]))
    assert inner.calls[-1] == TEXTS[3:5]
    # after a pass of several requests the next lone one waits for company, which joins it
    first = asyncio.ensure_future(batcher.embed([TEXTS[5]]))
    await asyncio.sleep(0.05)
    assert not first.done()
    await asyncio.wait_for(batcher.embed([TEXTS[6]]), 10)
    await first
    assert inner.calls[-1] == TEXTS[5:7] and len(inner.calls) == 5
    await batcher.aclose()


async def test_error_fails_only_the_callers_of_that_pass() -> None:
    inner = CountingEmbedder(fail_on="boom")
    batcher = BatchingEmbedder(inner=inner, max_batch=64, max_wait_ms=5)
    results = await asyncio.gather(
        batcher.embed(["boom"]), batcher.embed(["fine"]), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)  # same pass
    after = await batcher.embed(["fine again"])  # the worker survived
    assert after.shape == (1, 32)


async def test_cancelled_caller_does_not_disturb_others() -> None:
    inner = CountingEmbedder(delay=0.05)
    batcher = BatchingEmbedder(inner=inner, max_batch=64, max_wait_ms=20)
    doomed = asyncio.create_task(batcher.embed(["cancel me"]))
    kept = asyncio.create_task(batcher.embed(["keep me"]))
    await asyncio.sleep(0)
    doomed.cancel()
    out = await kept
    assert np.array_equal(out, HashingEmbedder(dim=32).embed_sync(["keep me"]))
    assert ["cancel me"] not in inner.calls and "cancel me" not in inner.calls[0]


async def test_aclose_fails_waiters_and_later_calls() -> None:
    inner = CountingEmbedder()
    batcher = BatchingEmbedder(inner=inner, max_batch=64, max_wait_ms=1000)
    await asyncio.gather(batcher.embed(["a"]), batcher.embed(["b"]))  # together: the next waits
    waiter = asyncio.create_task(batcher.embed(["waiting"]))
    await asyncio.sleep(0.01)
    await batcher.aclose()
    with pytest.raises(EmbeddingError):
        await waiter
    with pytest.raises(EmbeddingError, match="closed"):
        await batcher.embed(["late"])


async def test_empty_request_and_validation() -> None:
    batcher = BatchingEmbedder(inner=CountingEmbedder())
    assert (await batcher.embed([])).shape == (0, 32)
    assert batcher.passes == 0
    with pytest.raises(ValueError):
        BatchingEmbedder(inner=CountingEmbedder(), max_batch=0)
    with pytest.raises(TypeError):
        BatchingEmbedder(CountingEmbedder())  # type: ignore[call-arg]  # keyword-only
