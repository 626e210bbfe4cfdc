"""The content caches' default store: one local SQLite file of (key, sha256) -> vector rows.

Image embeddings (``features.embeddings``) and the text base models' probabilities
(``catalog_classifier/base_cache.py``) both live in one; the file-per-vector layout for caches
that several machines share is ``features/cache_files.py``.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from typing import Iterable

import numpy as np

from catalog_classifier import events

_SQL_CHUNK = 500  # stay well under SQLite's bound-parameter limit
_STAMP = "INSERT OR REPLACE INTO last_used VALUES (?, ?, ?)"  # (key, sha256, day): used on that day
log = logging.getLogger(__name__)


DAY_S = 86400


def today() -> int:
    """The UTC day number (days since 1970-01-01): the unit a cache row's last use is kept in."""
    return int(time.time() // DAY_S)


class EmbeddingCache:
    """SQLite table (backbone, sha256) -> vector blob of ``dim`` values of ``dtype`` (float32).

    WAL mode: readers never block and are never blocked by a writer, several processes
    may share one cache directory, and a crash mid-write loses at most the open
    transaction. Needs a local filesystem (WAL does not work over NFS). ``backbone`` is any
    key naming what made the vectors (base_cache.py keeps model probabilities in one too).

    Retention: a second, small table keeps the day each row was last written or read
    (``last_used``; a read on a day already counted writes nothing). It is apart from the
    vectors because rewriting a row with its blob to change its day wrote the whole blob
    again (27,500 rows: 0.6 s and the vectors' size in WAL). With ``max_idle_days`` > 0 the
    first use of a day, in any process sharing the file (a Ray node, a second night, a server
    running for weeks), deletes the rows of *every* key not used for that many days: items gone
    from the catalog, and the rows of model versions no longer served, which a retrain leaves
    behind whole.
    Freed pages are reused by later rows: the file stops growing at its live size (it is not
    shrunk). Rows from before this table count as used on the day it was added.
    """

    def __init__(self, cache_dir: str, backbone_name: str, dim: int,
                 filename: str = "embeddings.sqlite", dtype=np.float32, max_idle_days: int = 0):
        self.path = os.path.join(cache_dir, filename)
        self.backbone = backbone_name
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.max_idle_days = max_idle_days
        self.pruned: int | None = None  # rows this object's last pruning deleted (None: it never pruned)
        self._checked_on = -1  # the day this object last asked whether the file was pruned
        os.makedirs(cache_dir, exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # never reuse a connection across fork
            conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:
                conn.execute("BEGIN IMMEDIATE")  # one process at a time creates or upgrades the tables
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS embeddings (backbone TEXT NOT NULL, sha256 TEXT NOT NULL,"
                    " vec BLOB NOT NULL, PRIMARY KEY (backbone, sha256)) WITHOUT ROWID")
                if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'last_used'").fetchone():
                    conn.execute("CREATE TABLE last_used (backbone TEXT NOT NULL, sha256 TEXT NOT NULL,"
                                 " day INTEGER NOT NULL, PRIMARY KEY (backbone, sha256)) WITHOUT ROWID")
                    conn.execute("INSERT INTO last_used SELECT backbone, sha256, ? FROM embeddings", [today()])
                conn.execute("CREATE TABLE IF NOT EXISTS cache_meta (name TEXT PRIMARY KEY, value INTEGER)")
            self._conn, self._pid, self._checked_on = conn, os.getpid(), -1
        if self.max_idle_days > 0 and self._checked_on != today():
            self._prune(self._conn)
        return self._conn

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Once a day per file: delete every row not used for ``max_idle_days`` days."""
        day = self._checked_on = today()
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            last = conn.execute("SELECT value FROM cache_meta WHERE name = 'pruned_on'").fetchone()
            if last is not None and last[0] >= day:
                return
            with events.stage("cache.prune", file=os.path.basename(self.path)):
                idle = day - self.max_idle_days
                self.pruned = conn.execute(
                    "DELETE FROM embeddings WHERE (backbone, sha256) IN"
                    " (SELECT backbone, sha256 FROM last_used WHERE day < ?)", [idle]).rowcount
                conn.execute("DELETE FROM last_used WHERE day < ?", [idle])
            conn.execute("INSERT OR REPLACE INTO cache_meta VALUES ('pruned_on', ?)", [day])
        if self.pruned:
            log.info("%s: deleted %d rows not used for %d days", self.path, self.pruned, self.max_idle_days)

    def get_many(self, digests: Iterable[str]) -> dict[str, np.ndarray]:
        keys = list(dict.fromkeys(digests))
        found: dict[str, np.ndarray] = {}
        day, stale = today(), []
        with self._lock:
            conn = self._connection()
            for s in range(0, len(keys), _SQL_CHUNK):
                part = keys[s:s + _SQL_CHUNK]
                marks = ",".join("?" * len(part))
                rows = conn.execute(
                    "SELECT e.sha256, e.vec, u.day FROM embeddings e LEFT JOIN last_used u"
                    " ON u.backbone = e.backbone AND u.sha256 = e.sha256"
                    f" WHERE e.backbone = ? AND e.sha256 IN ({marks})",
                    [self.backbone, *part],
                )
                for digest, blob, used in rows:
                    if len(blob) == self.dtype.itemsize * self.dim:  # anything else is damage: a miss
                        found[digest] = np.frombuffer(blob, dtype=self.dtype)
                        if used is None or used < day:
                            stale.append((self.backbone, digest, day))
            if stale:
                self._touch(conn, stale)
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        if not items:
            return
        day = today()
        rows = [(self.backbone, d, np.ascontiguousarray(v, dtype=self.dtype).tobytes()) for d, v in items.items()]
        with self._lock:
            conn = self._connection()
            with conn:  # one transaction
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)
                conn.executemany(_STAMP, [(b, d, day) for b, d, _ in rows])

    @staticmethod
    def _touch(conn: sqlite3.Connection, rows: list[tuple[str, str, int]]) -> None:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_STAMP, rows)

    def __len__(self) -> int:
        with self._lock:
            return self._connection().execute(
                "SELECT COUNT(*) FROM embeddings WHERE backbone = ?", [self.backbone]).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
