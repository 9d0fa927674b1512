"""Dynamic batching: many concurrent `embed()` calls become one forward pass.

Why: under load the cache embeds one prompt per request. A transformer forward pass over
32 short texts costs little more than over one on a CPU (GEMMs get efficient only with many
rows), so merging concurrent requests multiplies throughput and cuts tail latency.

How: callers append (texts, future) to a pending list and wake one worker task per event
loop. The worker waits up to `max_wait_ms` for more callers (or until `max_batch` texts are
pending) -- but only while requests come together (the last pass carried several): after a
pass that served one request alone, the next one goes at once, since waiting for company that
rarely comes would add the whole window to every lone request (a cache miss's time to first
token on a quiet server) -- then runs one `inner.embed(merged)` — the inner embedder runs its forward pass in a
worker thread, so the loop keeps accepting requests meanwhile — and hands each caller its
slice of the rows. While one pass runs the next batch accumulates, so under load batches fill
without any waiting. A caller's texts are never split across passes; one request larger
than `max_batch` goes alone. An error in a pass fails exactly the callers in that pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import numpy as np

from curacache.embed.base import Embedder, as_text_list, empty_rows
from curacache.embed.errors import EmbeddingError

# (texts, the caller's future, loop time it was enqueued)
_Pending = tuple[list[str], "asyncio.Future[np.ndarray]", float]


class BatchingEmbedder:
    """Wraps any `Embedder`; itself an `Embedder` with the same `dim` and `name`."""

    def __init__(self, *, inner: Embedder, max_batch: int = 64, max_wait_ms: float = 2.0) -> None:
        if max_batch <= 0:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.inner = inner
        self.dim = inner.dim
        self.name = inner.name
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.passes = 0  # forward passes issued, for metrics and tests
        # Told (texts in the pass, longest queue wait in seconds) before each pass: the
        # server's metrics hook (this module stays free of any metrics library).
        self.on_batch: Callable[[int, float], None] | None = None
        self._pending: list[_Pending] = []
        self._pending_texts = 0
        self._wakeup: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._together = False  # the last pass served several requests: wait for company

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = as_text_list(texts)
        if self._closed:
            raise EmbeddingError(f"embedder {self.name!r} is closed")
        if not texts:
            return empty_rows(self.dim)
        self._ensure_worker()
        assert self._wakeup is not None and self._full is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((texts, future, loop.time()))
        self._pending_texts += len(texts)
        self._wakeup.set()
        if self._pending_texts >= self.max_batch:
            self._full.set()
        return await future

    def _ensure_worker(self) -> None:
        """One worker per event loop; a new loop (e.g. a new test) gets a fresh one."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._worker is not None and not self._worker.done():
            return
        self._loop = loop
        self._pending, self._pending_texts = [], 0
        self._wakeup, self._full = asyncio.Event(), asyncio.Event()
        self._worker = loop.create_task(self._run(), name=f"embed-batcher-{self.name}")

    async def _run(self) -> None:
        assert self._wakeup is not None and self._full is not None
        while True:
            await self._wakeup.wait()
            if self._together and self._pending_texts < self.max_batch and self.max_wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.max_wait_s)
            batch = self._take()
            if not self._pending:
                self._wakeup.clear()
            if self._pending_texts < self.max_batch:
                self._full.clear()
            if batch:
                self._together = len(batch) > 1
                await self._forward(batch)

    def _take(self) -> list[_Pending]:
        """Pop whole requests, oldest first, up to max_batch texts (at least one request)."""
        batch: list[_Pending] = []
        count = 0
        while self._pending:
            texts, future, _ = self._pending[0]
            if batch and count + len(texts) > self.max_batch:
                break
            entry = self._pending.pop(0)
            self._pending_texts -= len(texts)
            if future.done():  # caller cancelled while waiting
                continue
            batch.append(entry)
            count += len(texts)
        return batch

    async def _forward(self, batch: list[_Pending]) -> None:
        merged = [t for texts, _, _ in batch for t in texts]
        self.passes += 1
        if self.on_batch is not None:
            self.on_batch(len(merged), asyncio.get_running_loop().time() - batch[0][2])
        try:
            rows = await self.inner.embed(merged)
        except asyncio.CancelledError:
            for _, future, _ in batch:
                if not future.done():
                    future.cancel()
            raise
        except Exception as exc:
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for texts, future, _ in batch:
            if not future.done():
                future.set_result(rows[start : start + len(texts)])
            start += len(texts)

    async def aclose(self) -> None:
        """Fail waiting callers, stop the worker, close the inner embedder. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for _, future, _ in self._pending:
            if not future.done():
                future.set_exception(EmbeddingError(f"embedder {self.name!r} closed"))
        self._pending, self._pending_texts = [], 0
        worker = self._worker
        if worker is not None and not worker.done() and self._loop is asyncio.get_running_loop():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        await self.inner.aclose()
