"""Checkpoints of the embedded store's write-ahead log, taken in a thread of their own.

By default SQLite copies the log back into the database file (a checkpoint) inside whichever
commit takes the log past 1,000 pages, and that commit waits for the copy and its fsyncs. A
worker commits on its event loop, so its consuming, producing and acknowledging waited too.
Here a thread with its own connection checkpoints at an interval instead; ``sqlite3`` lets go
of the GIL while SQLite works, so the copy runs beside the loop. ``PASSIVE`` never waits for
writers or readers: what it cannot copy now, it copies next time.
"""

from __future__ import annotations

import sqlite3
import threading

import structlog

log = structlog.get_logger("idgraph.sqlite")

#: Between checkpoints. At 1,000 events/s the log grows by ~15 MB in this time.
INTERVAL_S = 0.5


class Checkpointer:
    """Checkpoints ``path``'s log every ``interval_s`` until :meth:`stop`; its owner turns the
    automatic checkpoints of its own connection off (``PRAGMA wal_autocheckpoint = 0``)."""

    def __init__(self, path: str, interval_s: float = INTERVAL_S) -> None:
        self._path = path
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idgraph-sqlite-checkpoints", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Wait for a checkpoint under way to end; the owner's close checkpoints what is left."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None)
        try:
            while not self._stopping.wait(self._interval_s):
                self._checkpoint(db)
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # another process's checkpoint or recovery: the next one catches up
            log.debug("checkpoint skipped", error=str(exc))
