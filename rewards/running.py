"""Running statistics for `running_norm`: an exponential moving mean and variance per key, kept in memory or in
SQLite so that a restarted server (or a second worker process) continues from the saved state.

The update, for a batch x_1..x_n with mean b = mean(x) and population variance v = mean((x - b)^2):

    first batch:   mean = b,                      var = v
    later batches: mean' = m * mean + (1 - m) * b
                   var'  = m * var + (1 - m) * v + m * (1 - m) * (b - mean)^2

that is, the variance of a mixture that weighs the history by m and the new batch by 1 - m; the last term is the
spread between the two means, so a shift in the reward distribution widens the variance instead of vanishing.
Batches count the same whatever their size: the momentum is per batch, as in the PPO loops that use it."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS running_stats (
    key TEXT PRIMARY KEY,
    mean REAL NOT NULL,
    var REAL NOT NULL,
    count INTEGER NOT NULL,
    batches INTEGER NOT NULL,
    updated_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class RunningState:
    mean: float
    var: float
    count: int  # items seen, all batches together
    batches: int
    updated_at: float  # unix time of the last update

    @property
    def std(self) -> float:
        return math.sqrt(self.var)


def ema_update(state: RunningState | None, values: np.ndarray, momentum: float) -> RunningState:
    """The module docstring's formula, on one batch; pure, so it can be checked by hand."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("running statistics need at least one value")
    if not np.isfinite(x).all():
        # Persisted state lives on across restarts: one NaN would poison every later reward.
        raise ValueError("running statistics need finite values")
    if not 0 < momentum < 1:
        raise ValueError(f"momentum must be in (0, 1), got {momentum}")
    b, v = float(x.mean()), float(x.var())
    now = time.time()
    if state is None:
        return RunningState(b, v, int(x.size), 1, now)
    m = momentum
    mean = m * state.mean + (1 - m) * b
    var = m * state.var + (1 - m) * v + m * (1 - m) * (b - state.mean) ** 2
    return RunningState(mean, var, state.count + int(x.size), state.batches + 1, now)


class RunningStats:
    """Exponential moving mean/variance per string key. With a path the state is in SQLite: every update reads,
    updates and writes its row in one immediate transaction, so processes sharing the file never lose an update.
    Thread-safe."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._memory: dict[str, RunningState] = {}
        self._db: sqlite3.Connection | None = None
        self._closed = False
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below), not the module's implicit ones.
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)

    def _read(self, key: str) -> RunningState | None:
        self._open()
        if self._db is None:
            return self._memory.get(key)
        row = self._db.execute(
            "SELECT mean, var, count, batches, updated_at FROM running_stats WHERE key = ?", (key,)
        ).fetchone()
        return RunningState(*row) if row else None

    def _open(self) -> None:
        if self._closed:
            # Without this a closed file-backed instance would fall through to the in-memory path and forget.
            raise RuntimeError("RunningStats is closed")

    def update(self, key: str, values: np.ndarray, momentum: float) -> tuple[float, float]:
        """Fold one batch into the key's statistics and return the new (mean, std)."""
        with self._lock:
            self._open()
            if self._db is None:
                state = ema_update(self._memory.get(key), values, momentum)
                self._memory[key] = state
                return state.mean, state.std
            self._db.execute("BEGIN IMMEDIATE")
            try:
                state = ema_update(self._read(key), values, momentum)
                self._db.execute(
                    "INSERT OR REPLACE INTO running_stats (key, mean, var, count, batches, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (key, state.mean, state.var, state.count, state.batches, state.updated_at),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return state.mean, state.std

    def get(self, key: str) -> tuple[float, float] | None:
        """The key's (mean, std), or None before its first update."""
        state = self.state(key)
        return None if state is None else (state.mean, state.std)

    def state(self, key: str) -> RunningState | None:
        with self._lock:
            return self._read(key)

    def keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            self._open()
            if self._db is None:
                return sorted(k for k in self._memory if k.startswith(prefix))
            rows = self._db.execute("SELECT key FROM running_stats ORDER BY key").fetchall()
            return [k for (k,) in rows if k.startswith(prefix)]

    def reset(self, prefix: str) -> int:
        """Forget every key starting with prefix (e.g. a spec's, see compose.running_key); how many were dropped."""
        doomed = self.keys(prefix)
        with self._lock:
            if self._db is None:
                for k in doomed:
                    self._memory.pop(k, None)
            else:
                self._db.executemany("DELETE FROM running_stats WHERE key = ?", [(k,) for k in doomed])
        return len(doomed)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._closed = True

    def __enter__(self) -> RunningStats:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
