"""Embedding cache as one small file per image, for caches that many machines share.

The SQLite cache (embeddings.EmbeddingCache) is the fast default on one machine, but
SQLite's WAL mode needs a local filesystem. This layout works wherever fsspec can write:
a shared/network filesystem path or an object-store URI (``s3://bucket/cache``, with
s3fs installed). Every vector is written whole under its final name (local: temp file +
rename; object stores: a PUT is atomic), so concurrent workers computing the same image
only ever overwrite a vector with an identical one.

    ROOT/<sha256(backbone key)[:16]>/<sha[:2]>/<sha>.f32
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Iterable

import numpy as np


def is_uri(path: str) -> bool:
    return "://" in path


class FileEmbeddingCache:
    def __init__(self, root: str, backbone_name: str, dim: int):
        import fsspec

        self.root = root.rstrip("/")
        self.dim = dim
        self.fs, base = fsspec.core.url_to_fs(self.root)
        self.base = f"{base}/{hashlib.sha256(backbone_name.encode()).hexdigest()[:16]}"
        self.local = not is_uri(root) or root.startswith("file://")
        self.fs.makedirs(self.base, exist_ok=True)

    def _path(self, digest: str) -> str:
        return f"{self.base}/{digest[:2]}/{digest}.f32"

    def get_many(self, digests: Iterable[str]) -> dict[str, np.ndarray]:
        found = {}
        for d in dict.fromkeys(digests):
            try:
                blob = self.fs.cat_file(self._path(d))
            except (FileNotFoundError, OSError):
                continue
            if len(blob) == 4 * self.dim:  # anything else is damage: a miss, recomputed
                found[d] = np.frombuffer(blob, dtype=np.float32)
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

    def __len__(self) -> int:
        return sum(1 for p in self.fs.find(self.base) if p.endswith(".f32"))

    def close(self) -> None:
        pass
