"""Embedding cache as one small file per image, for caches that many machines share.

The SQLite cache (embeddings.EmbeddingCache) is the fast default on one machine, but
SQLite's WAL mode needs a local filesystem. This layout works wherever fsspec can write:
a shared/network filesystem path or an object-store URI (``s3://bucket/cache``, with
s3fs installed). Every vector is written whole under its final name (local: temp file +
rename; object stores: a PUT is atomic), so concurrent workers computing the same image
only ever overwrite a vector with an identical one.

    ROOT/<sha256(backbone key)[:16]>/<sha[:2]>/<sha>.f32

Retention (``max_idle_days`` > 0, a filesystem path): a read sets the file's time, and the
first use of a day by any machine sharing the folder deletes the vectors of every key whose
file was not written or read for that many days (``ROOT/.pruned_on`` holds the day it last
ran), and temp files a killed writer left. An object store cannot change an object's time
without rewriting it: there the bucket's own expiry rule does this (an expired vector is
computed again).
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from typing import Iterable

import numpy as np

from catalog_classifier import events
from catalog_classifier.io_utils import atomic_write_text

from .cache_sqlite import DAY_S, today

PRUNED_ON = ".pruned_on"
log = logging.getLogger(__name__)


def is_uri(path: str) -> bool:
    return "://" in path


class FileEmbeddingCache:
    def __init__(self, root: str, backbone_name: str, dim: int, max_idle_days: int = 0):
        import fsspec

        self.root = root.rstrip("/")
        self.dim = dim
        self.fs, base = fsspec.core.url_to_fs(self.root)
        self.base = f"{base}/{hashlib.sha256(backbone_name.encode()).hexdigest()[:16]}"
        self.local = not is_uri(root) or root.startswith("file://")
        self.fs.makedirs(self.base, exist_ok=True)
        self.max_idle_days = max_idle_days if self.local else 0
        self.pruned: int | None = None  # files this object's last pruning deleted (None: it never pruned)
        self._checked_on = -1

    def _path(self, digest: str) -> str:
        return f"{self.base}/{digest[:2]}/{digest}.f32"

    def get_many(self, digests: Iterable[str]) -> dict[str, np.ndarray]:
        self._prune_once_a_day()
        found = {}
        for d in dict.fromkeys(digests):
            path = self._path(d)
            try:
                blob = self.fs.cat_file(path)
            except (FileNotFoundError, OSError):
                continue
            if len(blob) == 4 * self.dim:  # anything else is damage: a miss, recomputed
                found[d] = np.frombuffer(blob, dtype=np.float32)
                if self.max_idle_days:
                    _touch(path)
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        for d, v in items.items():
            blob = np.ascontiguousarray(v, dtype=np.float32).tobytes()
            path = self._path(d)
            if self.local:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".", suffix=".tmp")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(blob)
                os.replace(tmp, path)
            else:
                self.fs.pipe_file(path, blob)

    def _prune_once_a_day(self) -> None:
        day = today()
        if not self.max_idle_days or self._checked_on == day:
            return
        self._checked_on = day
        root = os.path.dirname(self.base)
        marker = os.path.join(root, PRUNED_ON)
        try:
            with open(marker) as fh:
                if int(fh.read().strip() or -1) >= day:
                    return
        except (FileNotFoundError, ValueError):
            pass
        with events.stage("cache.prune"):
            now = time.time()
            self.pruned = _delete_idle(root, now - self.max_idle_days * DAY_S, now - DAY_S)
            atomic_write_text(str(day), marker)
        if self.pruned:
            log.info("%s: deleted %d vectors not used for %d days", root, self.pruned, self.max_idle_days)

    def __len__(self) -> int:
        return sum(1 for p in self.fs.find(self.base) if p.endswith(".f32"))

    def close(self) -> None:
        pass


def _touch(path: str) -> None:
    try:
        os.utime(path)
    except OSError:  # deleted meanwhile, or a read-only share: the read still counts as a hit
        pass


def _delete_idle(root: str, before: float, tmp_before: float) -> int:
    """Delete ``ROOT/<key>/<xx>/*.f32`` last used before ``before`` and temp files older than
    ``tmp_before`` (a killed writer's); returns the vectors deleted."""
    n = 0
    for key in _dirs(root):
        for sub in _dirs(key):
            for e in os.scandir(sub):
                try:
                    mtime = e.stat(follow_symlinks=False).st_mtime
                    if (e.name.endswith(".f32") and mtime < before) or (
                            e.name.endswith(".tmp") and mtime < tmp_before):
                        os.unlink(e.path)
                        n += e.name.endswith(".f32")
                except FileNotFoundError:  # another machine pruned it first
                    continue
    return n


def _dirs(path: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
