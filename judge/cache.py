"""Verdicts are deterministic given everything that went into them, so they are cached under a key made of all of
it: backend, model, constitution name and version, principle, mode and options, and the texts. In memory by
default (LRU); with a path, in SQLite as well, so verdicts survive restarts and are shared by labelling runs.

The cache only ever saves work, so SQLite never makes a judge call fail or wait long: its reads and writes run off
the event loop, each waits at most `timeout_s` for another process's lock, and any SQLite error is a miss (a read)
or a skipped write (a write), and logged. After an error the file is left alone for `retry_db_after_s`, so a burst
of lookups against a locked file does not queue up behind one lock wait each (and logs once, not once each)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def cache_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class VerdictCache:
    # Seconds the SQLite file is skipped after an error; an instance attribute overrides it.
    retry_db_after_s = 1.0

    def __init__(self, max_entries: int = 100_000, path: Path | None = None, timeout_s: float = 0.1) -> None:
        self.max_entries = max_entries
        self._memory: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Held only for in-memory bookkeeping, never across SQLite calls, so the event loop never waits on it.
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self._db: sqlite3.Connection | None = None
        # One connection shared by the worker threads; this serializes them, and only they ever take it.
        self._db_lock = threading.Lock()
        self._db_down_until = 0.0
        self._db_ready = False
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=timeout_s, check_same_thread=False)
            # A file locked at startup must not stop the server either: the table is then made at the first use
            # that finds the file free.
            with self._db_lock:
                self._usable()

    async def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            value = self._memory.get(key)
            if value is not None:
                self._memory.move_to_end(key)
        if value is None and self._db is not None:
            value = await asyncio.to_thread(self._read, key)
            if value is not None:
                with self._lock:
                    self._remember(key, value)
        with self._lock:
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
        return value

    async def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._remember(key, value)
        if self._db is not None:
            await asyncio.to_thread(self._write, key, json.dumps(value))

    def _read(self, key: str) -> dict[str, Any] | None:
        with self._db_lock:
            if (db := self._usable()) is None:
                return None
            try:
                row = db.execute("SELECT value FROM verdicts WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as error:
                self._failed("read", error)
                return None
        return json.loads(row[0]) if row else None

    def _write(self, key: str, value: str) -> None:
        with self._db_lock:
            if (db := self._usable()) is None:
                return
            try:
                db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, value))
                db.commit()
            except sqlite3.Error as error:
                self._failed("write", error)
                # The failed INSERT leaves its implicit transaction open; later reads must not run inside it.
                with contextlib.suppress(sqlite3.Error):
                    db.rollback()

    def _usable(self) -> sqlite3.Connection | None:
        """The connection, unless this is the pause after an error or its table cannot be made now. Called with
        `_db_lock` held."""
        if self._db is None or time.monotonic() < self._db_down_until:
            return None
        if not self._db_ready:
            try:
                self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self._db.commit()
            except sqlite3.Error as error:
                self._failed("setup", error)
                return None
            self._db_ready = True
        return self._db

    def _failed(self, what: str, error: sqlite3.Error) -> None:
        logger.warning(
            "verdict cache %s failed (%s: %s); the SQLite file is skipped for %.1f s, verdicts are still computed",
            what,
            type(error).__name__,
            error,
            self.retry_db_after_s,
        )
        self._db_down_until = time.monotonic() + self.retry_db_after_s

    def _remember(self, key: str, value: dict[str, Any]) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    def __len__(self) -> int:
        return len(self._memory)
