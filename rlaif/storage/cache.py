"""A persistent cache of judge and generator answers (SQLite), so no call is paid twice.

Keys hash everything that determines an answer: backend, model, decoding options and the
rendered prompt. Values are JSON. Each answer is committed as it arrives, so a run that
is killed keeps every answer it had received.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlaif.errors import ConfigError
from rlaif.storage.locks import is_disk_full


def cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class AnswerCache:
    def __init__(self, path: str | Path, read_only: bool = False):
        """The cache in an SQLite file; `read_only` (a dry run) opens an existing file without
        writing to it or beside it, and finds nothing in a file that is not a cache."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self.read_only = read_only
        if read_only:
            # A WAL database opened even read-only gets its -wal and -shm files made beside it; with no
            # -wal there (no run is writing it) it is read as immutable, which makes none.
            quiet = not self.path.with_name(self.path.name + "-wal").exists()
            self._db = sqlite3.connect(f"file:{self.path.absolute()}?mode=ro{'&immutable=1' if quiet else ''}", uri=True,
                                       check_same_thread=False)
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as e:
            if is_disk_full(e):
                raise
            raise ConfigError(f"cannot open it as a cache ({e})", str(self.path)) from None
        # Each answer is its own transaction. Written to the WAL before `put` returns, it survives
        # a killed process; NORMAL leaves out the fsync per commit (only a power loss can drop the
        # last answers), which would otherwise stall the event loop of an API judge on every call.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get(self, key: str) -> Any | None:
        with self._lock:
            try:
                row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
            except sqlite3.DatabaseError:
                if not self.read_only:
                    raise
                return None  # read-only, a file that is not a cache (yet) holds no answers
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(value)))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def through_cache(cache: AnswerCache, keys: list[str], compute: Callable[[list[int]], list[Any]]) -> list[Any]:
    """The value of each key: from the cache, or from `compute(indices)`, which gets the index of
    the first occurrence of each missing key and returns their values in that order (then cached)."""
    found = {k: v for k in set(keys) if (v := cache.get(k)) is not None}
    missing: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in found:
            missing.setdefault(k, i)
    if missing:
        for k, value in zip(missing, compute(list(missing.values()))):
            cache.put(k, value)
            found[k] = value
    return [found[k] for k in keys]
