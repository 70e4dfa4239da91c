"""Catch-up subscription on the store's global order: replay from a checkpoint, then follow.

It does not poll in a busy loop: when it has caught up it waits on LISTEN es_appended (sent by
es_append at commit) with a timeout as a safety net. The handler owns its checkpoint: it should
store the position of the last event it handled in the same transaction as its effect, and
`load_checkpoint` reads it back on start, so a crash replays at most the unfinished batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from infra.eventstore.base import row_to_envelope
from infra.eventstore.protocol import EventStore, Listener


class CatchUpSubscription:
    def __init__(
        self,
        store: EventStore,
        handle_batch: Callable[[Sequence[Any]], None],
        load_checkpoint: Callable[[], int],
        batch_size: int = 500,
        idle_timeout: float = 2.0,
        raw: bool = False,
        types: set[str] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """`types`: only these event types reach handle_batch (filtered in the database); the
        position still moves past the others, reported through `on_progress`."""
        self.types = sorted(types) if types is not None else None
        self.on_progress = on_progress
        self.store = store
        self.handle_batch = handle_batch
        self.load_checkpoint = load_checkpoint
        self.batch_size = batch_size
        self.idle_timeout = idle_timeout
        self.raw = raw
        self.position = 0
        self._started = False
        self._stop = threading.Event()
        self._listener: Listener | None = None

    def stop(self) -> None:
        self._stop.set()
        listener = self._listener
        if listener is not None:
            listener.wake()  # a run() waiting for appends returns at once, not after idle_timeout

    def catch_up(self) -> int:
        """Handle everything stored now; return how many events were handled."""
        if not self._started:
            self.position = self.load_checkpoint()
            self._started = True
        handled = 0
        while not self._stop.is_set():
            if self.types is None:
                rows = self.store.read_all_raw(self.position, self.batch_size)
                if not rows:
                    return handled
                upto = int(rows[-1][0])
            else:
                rows, upto = self.store.read_filtered_raw(self.position, self.types, self.batch_size)
                if upto <= self.position:
                    return handled
            if rows:
                self.handle_batch(rows if self.raw else [row_to_envelope(r) for r in rows])
            self.position = upto
            handled += len(rows)
            if self.on_progress is not None:
                self.on_progress(upto)
            if len(rows) < self.batch_size:
                # A short read reached the head as its snapshot saw it: caught up. Reading again
                # only to get nothing doubled every follower's reads (issue 15: each append woke
                # the relay and every projection twice). What was appended since has notified the
                # listener, which is LISTENing since before the first read, so `run` reads it next.
                return handled
        return handled

    def run(self) -> None:
        """Follow the store until stop() is called. May be called again after it raised (a lost
        database): every run listens on a fresh listener and resumes from the checkpoint."""
        self.position = self.load_checkpoint()
        self._started = True
        listener = self.store.listen()
        self._listener = listener
        try:
            while not self._stop.is_set():
                self.catch_up()
                if not self._stop.is_set():
                    listener.wait(self.idle_timeout)
        finally:
            self._listener = None
            listener.close()
