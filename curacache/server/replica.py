"""Every server process is a replica: it tails the store's change log and applies it.

Start-up (`Replica.begin`, before the indexes load): note where each log stream ends. The
load then reads the store's state, which includes everything before those positions, and
the tail starts there: a change both loaded and tailed is applied twice, which is harmless
because applying a change re-reads its ids from the store (`Collection.apply_changes`).

The tail (`run`) polls `DocumentStore.read_changes` (SQLite: one indexed range query; Redis:
one pipelined XRANGE per stream, since one XREAD cannot span Cluster slots) and applies what
it finds, in a thread of its own; then, on the event loop, it tells the listeners, advances
the streams' cursors and wakes the reads waiting for those positions (read-your-writes,
`wait_for`). Polling rather than blocking reads keeps
one implementation for both stores; the interval bounds the added lag (DESIGN §6).

A replica that falls behind the log's retention (paused, cut off from the store) is told so
by a "reset" change (`DocumentStore.read_changes`) and re-reads from the store what it
missed: the registry, and every record of the collections that stream carries.

Tokens: a client sees a log position as `position@stream` (e.g. `1732000000000-3@docs`,
or `42-0@` for SQLite's one stream), so a read names the stream its write went to.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence

from curacache.errors import InvalidArgument
from curacache.server.vectordb import VectorDB
from storage.types import Change, position_key

log = logging.getLogger("curacache.replica")

ChangeListener = Callable[[Sequence[str]], Awaitable[None]]
BlobListener = Callable[[], Awaitable[object]]
NoteListener = Callable[[str], Awaitable[None]]


def make_token(stream: str, position: str) -> str:
    """The client-facing form of a log position ("" stays "": nothing to wait for)."""
    return f"{position}@{stream}" if position else ""


def parse_token(token: str, field: str) -> tuple[str, str]:
    """(stream, position) of a client's token; InvalidArgument naming `field` if malformed."""
    position, sep, stream = token.partition("@")
    try:
        if not sep:
            raise ValueError(token)
        position_key(position)
    except ValueError:
        raise InvalidArgument(field, f"not a log position: {token[:80]!r}") from None
    return stream, position


class Replica:
    """Keeps one process's collections in step with the store's change log."""

    def __init__(self, db: VectorDB, *, poll_interval_s: float = 0.005, batch: int = 1024) -> None:
        self._db = db
        self._store = db.store
        self._poll_interval = poll_interval_s
        self._batch = batch
        self._cursors: dict[str, str] = {}
        self._listeners: dict[str, ChangeListener] = {}
        self._blob_listeners: dict[tuple[str, str], BlobListener] = {}
        self._note_listeners: dict[str, NoteListener] = {}
        self._advanced = asyncio.Condition()
        self.applied = 0  # changes applied since start (diagnostics)

    def begin(self) -> None:
        """Note where every stream ends; call before loading the collections (blocking)."""
        registry = self._store.log_heads([""])
        streams = {self._store.stream_of(s.name) for s in self._store.list_collections()}
        self._cursors = {**registry, **self._store.log_heads(sorted(streams - {""}))}

    def keep_loaded_only(self) -> None:
        """Stop tailing the streams of collections this replica does not hold (another
        placement group's); call after loading."""
        held = {self._store.stream_of(c.spec.name) for c in self._db.loaded()} | {""}
        for stream in [s for s in self._cursors if s not in held]:
            del self._cursors[stream]

    def follow_placement(self) -> None:
        """The placement map changed (blocking: call in a thread): let go of what this replica
        no longer serves and load what it serves now, each new collection's stream tailed
        from where it ended before the load (as in `begin`)."""
        self._db.apply_placement(load=False)
        fresh = [
            s.name
            for s in self._store.list_collections()
            if self._db.placement.serves(s.name) and self._db.find(s.name) is None
        ]
        streams = {self._store.stream_of(n) for n in fresh} - {"", *self._cursors}
        heads = self._store.log_heads(sorted(streams))
        for name in fresh:
            self._db.open_existing(name)
        for stream, head in heads.items():
            self._cursors.setdefault(stream, head)
        self.keep_loaded_only()

    def listen(self, collection: str, listener: ChangeListener) -> None:
        """Call `listener(ids)` on the event loop after a change to `collection` is applied."""
        self._listeners[collection] = listener

    def listen_notes(self, collection: str, listener: NoteListener) -> None:
        """Call `listener(note)` on the event loop for each note announced on `collection`."""
        self._note_listeners[collection] = listener

    def listen_blob(self, collection: str, key: str, listener: BlobListener) -> None:
        """Call `listener()` on the event loop after an announced write of that blob."""
        self._blob_listeners[(collection, key)] = listener

    async def head_token(self, collection: str) -> str:
        """A token for the newest change of `collection`'s stream: a read that waits for it
        sees every write to the collection acknowledged before this call."""
        stream = self._store.stream_of(collection)
        head = (await asyncio.to_thread(self._store.log_heads, [stream]))[stream]
        return make_token(stream, head)

    def applied_position(self, stream: str) -> str:
        return self._cursors.get(stream, "")

    async def wait_for(self, token: str, wait_s: float, field: str = "min_log_position") -> bool:
        """Wait until the change at `token` is applied here; False if `wait_s` ran out first.
        An empty token is always reached."""
        if not token:
            return True
        stream, position = parse_token(token, field)
        wanted = position_key(position)

        def reached() -> bool:
            return position_key(self._cursors.get(stream, "")) >= wanted

        async with self._advanced:
            try:
                await asyncio.wait_for(self._advanced.wait_for(reached), max(wait_s, 0.0))
            except TimeoutError:
                return reached()
        return True

    async def run(self) -> None:
        """Tail the log until cancelled, in a thread of its own (`_tail`) that polls, reads
        and applies; it comes to the event loop only with a batch to publish. Why a thread:
        an asyncio.to_thread hop per poll cost ~0.25 CPU ms, ~5% of a core at 200 idle polls
        a second per process (bench/replication/README.md)."""
        stop = threading.Event()
        tail = threading.Thread(
            target=self._tail,
            args=(asyncio.get_running_loop(), stop),
            name="change-log-tail",
            daemon=True,  # never holds up the interpreter's exit
        )
        tail.start()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            stop.set()

    def _tail(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        """Poll until `stop`; a failing poll (or publish) is logged and retried, the cursors
        kept where they were, so the batch is applied again (idempotent)."""
        while not stop.is_set():
            try:
                changes, touched = self._read_and_apply()
                if changes:
                    publish = self._publish(changes, touched)
                    try:
                        published = asyncio.run_coroutine_threadsafe(publish, loop)
                    except RuntimeError:  # the loop is closed (the server is stopping)
                        publish.close()  # never to run: no "never awaited" warning
                        raise
                    while not stop.is_set():  # the loop may be gone once stop is set
                        try:
                            published.result(timeout=0.5)
                            break
                        except TimeoutError:
                            continue
            except Exception:  # store briefly unavailable
                if stop.is_set():
                    return
                log.exception("change-log tail failed; retrying")
                stop.wait(max(self._poll_interval, 0.5))
                continue
            if not changes:
                stop.wait(self._poll_interval)

    async def poll_once(self) -> int:
        """Read, apply and publish one batch of changes (what the tail does each round);
        returns how many there were."""
        changes, touched = await asyncio.to_thread(self._read_and_apply)
        if changes:
            await self._publish(changes, touched)
        return len(changes)

    def _read_and_apply(self) -> tuple[list[Change], list[tuple[str, tuple[str, ...]]]]:
        """Read one batch (blocking) and apply it in one call, with consecutive record changes
        of a collection merged into one re-read of their ids (the same result, since applying
        a change re-reads the store): under a steady write rate a poll finds several changes,
        and one store read for all of them is what keeps a replica's cost per write low.
        Returns the changes and the (collection, ids) record changes applied."""
        changes = self._store.read_changes(dict(self._cursors), self._batch)
        return changes, self._apply_batch(changes) if changes else []

    async def _publish(
        self, changes: Sequence[Change], touched: Sequence[tuple[str, tuple[str, ...]]]
    ) -> None:
        """On the event loop, after a batch is applied: tell the listeners, then advance the
        cursors and wake the reads waiting for them."""
        for collection, ids in touched:
            listener = self._listeners.get(collection)
            if listener is not None:
                await listener(ids)
        blobs = {(c.collection, c.ids[0]) for c in changes if c.op == "blob" and c.ids}
        for key in blobs:
            blob_listener = self._blob_listeners.get(key)
            if blob_listener is not None:
                try:
                    await blob_listener()
                except Exception:  # a bad setting must not stall the tail: the store keeps it
                    log.exception("reloading %s/%s after a change failed", *key)
        for change in changes:
            note_listener = self._note_listeners.get(change.collection)
            if change.op == "note" and note_listener is not None:
                try:
                    await note_listener(change.note)
                except Exception:  # a bad note must not stall the tail
                    log.exception("a note on %s could not be applied", change.collection)
        async with self._advanced:
            for change in changes:
                self._cursors[change.stream] = change.position
            self._advanced.notify_all()
        self.applied += len(changes)

    def _resync(self, stream: str) -> list[tuple[str, tuple[str, ...]]]:
        """Re-read from the store what the trimmed part of `stream` would have told: the
        collections that exist (the registry's stream) and every record of the collections
        whose changes it carries. Applying the changes that follow the gap again is harmless
        (idempotent), so the cursor may move to the gap's end."""
        if stream == "":
            for collection in self._db.loaded():  # dropped, or dropped and made again
                self._db.forget(collection.spec.name)
            specs = self._store.list_collections()
            fresh = [s.name for s in specs if self._db.find(s.name) is None]
            streams = {self._store.stream_of(n) for n in fresh} - {"", *self._cursors}
            heads = self._store.log_heads(sorted(streams))  # before loading, as in begin()
            for name in fresh:
                self._db.open_existing(name)
            for name, head in heads.items():
                self._cursors.setdefault(name, head)
            live = {s.name for s in specs} | {""}
            for name in [n for n in self._cursors if n not in live]:
                self._cursors.pop(name, None)  # a dropped collection's own stream
            self.keep_loaded_only()
        log.warning("change log trimmed past this replica's position (%r): resyncing", stream)
        resynced = []
        for collection in self._db.loaded():
            if self._store.stream_of(collection.spec.name) == stream:
                resynced.append((collection.spec.name, tuple(collection.resync())))
        return resynced

    def _apply_batch(self, changes: Sequence[Change]) -> list[tuple[str, tuple[str, ...]]]:
        """Apply `changes` in order; returns the (collection, ids) record changes applied."""
        applied: list[tuple[str, tuple[str, ...]]] = []
        # collection -> its record changes (position, ids) not applied yet, in log order
        pending: dict[str, list[tuple[str, tuple[str, ...]]]] = {}

        def flush(collection: str | None = None) -> None:
            for name in [collection] if collection is not None else list(pending):
                merged = pending.pop(name, [])
                target = self._db.find(name)
                if merged and target is not None:
                    target.apply_changes(merged)
                    applied.append(
                        (name, tuple(dict.fromkeys(i for _, ids in merged for i in ids)))
                    )

        for change in changes:
            if change.op == "create":
                flush(change.collection)
                self._db.open_existing(change.collection)
                stream = self._store.stream_of(change.collection)
                if stream and self._db.find(change.collection) is not None:
                    self._cursors.setdefault(stream, "0-0")  # its own log, from its start
            elif change.op == "reset":  # the log was trimmed past this replica's cursor
                flush()
                applied += self._resync(change.stream)
            elif change.op in ("blob", "note"):
                continue  # a setting or a note: its listener takes it (poll_once), no record
            elif change.op == "drop":
                pending.pop(change.collection, None)  # gone with the collection
                self._db.forget(change.collection)
                stream = self._store.stream_of(change.collection)
                if stream:
                    self._cursors.pop(stream, None)
            else:
                pending.setdefault(change.collection, []).append((change.position, change.ids))
        flush()
        return applied
