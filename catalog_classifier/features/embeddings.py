"""Image embeddings for a list of image references, cached on disk by image content.

The cache key is sha256(image bytes) + backbone identity (see backbone.backbone_key),
so a renamed or re-crawled but unchanged image never runs through the CNN twice, and a
changed backbone, preprocessing, runtime or precision never serves another's vectors.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from catalog_classifier import events
from catalog_classifier.config import CatalogConfig, ImageConfig
from catalog_classifier.features.backbone import (
    EMBED_DIM, backbone_key, build_transform, embed_forward, input_size,
)
from catalog_classifier.features.cache_sqlite import EmbeddingCache
from catalog_classifier.features.images import CORRUPT, decode_image, read_image_bytes
from catalog_classifier.features.runtimes import load_runtime

embedding_dim = EMBED_DIM


def open_cache(cfg: ImageConfig, key: str, max_idle_days: int = 0):
    """SQLite on a local path (default; rows idle ``max_idle_days`` are pruned, see ``EmbeddingCache``);
    one file per image for ``cache_layout: files`` or a URI (pruned alike on a filesystem path, see
    ``FileEmbeddingCache``; an object store's own expiry rule does it there)."""
    from .cache_files import FileEmbeddingCache, is_uri

    if cfg.cache_layout == "files" or is_uri(cfg.cache_dir):
        return FileEmbeddingCache(cfg.cache_dir, key, EMBED_DIM, max_idle_days=max_idle_days)
    if cfg.cache_layout != "sqlite":
        raise ValueError(f"image.cache_layout must be 'sqlite' or 'files', not {cfg.cache_layout!r}")
    return EmbeddingCache(cfg.cache_dir, key, EMBED_DIM, max_idle_days=max_idle_days)


def default_workers() -> int:
    """Reader/decoder threads of an embedder: up to 4 and the cores, and no more than
    CATALOG_CLASSIFIER_THREADS when it is set (the process's CPU budget, as for torch, OpenVINO
    and LightGBM): on a capped process extra threads only contend for the same cores."""
    n = min(4, os.cpu_count() or 1)
    cap = os.environ.get("CATALOG_CLASSIFIER_THREADS")
    return max(1, min(n, int(cap))) if cap else n


@dataclass
class EmbeddingResult:
    vectors: np.ndarray  # float32 [n, 1280]; NaN rows where ok is False
    ok: np.ndarray  # bool [n]
    reasons: list[str | None]  # why a row has no vector; None where ok
    digests: list[str | None]  # sha256 of the image bytes (None when unreadable)
    n_computed: int  # distinct images run through the CNN in this call
    n_cached: int  # distinct images served from the on-disk cache
    n_reused: int  # rows whose bytes repeat an earlier row of this call


class ImageEmbedder:
    """Embeds image references with the backbone, caching by image content.

    The CNN is loaded on first need only: a fully cached catalog never loads it. An
    already loaded backbone (a torch module from load_backbone with the same cfg, or a
    runtime from runtimes.load_runtime) may be passed in; a module is wrapped in the
    configured runtime, so its vectors match the cache key.

    Reading, hashing, decoding and letterboxing run in a thread pool ahead of the forward
    pass, at most ``prefetch`` images in flight (default two batches): the CNN never waits for
    a whole chunk to decode, and memory stays bounded. Cache writes go to one writer thread
    (SQLite and the file layout wait on I/O, not on the CPU), so the next batch's forward pass
    runs while the last one is stored; ``embed`` returns once every write has finished.
    """

    embedding_dim = EMBED_DIM

    def __init__(
        self,
        cfg: ImageConfig,
        image_root: str | None = None,
        max_bytes: int = CatalogConfig.max_image_bytes,
        max_pixels: int = CatalogConfig.max_image_pixels,
        workers: int | None = None,
        model=None,
        prefetch: int | None = None,
        max_idle_days: int = 0,
    ):
        self.cfg = cfg
        self.image_root = image_root
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.workers = workers or default_workers()
        self.prefetch = prefetch or 2 * cfg.batch_size
        self.key = backbone_key(cfg)
        self.cache = open_cache(cfg, self.key, max_idle_days) if cfg.cache_dir else None
        self._transform = build_transform(input_size(cfg))
        self._given = model
        self._model = None

    @property
    def model(self):
        """The runtime that runs the forward pass (loaded, exported or compiled on first use)."""
        if self._model is None:
            given = self._given
            with events.stage("image.load"):
                self._model = given if given is not None and not isinstance(given, torch.nn.Module) else (
                    load_runtime(self.cfg, given))
        return self._model

    def _read(self, ref):
        return read_image_bytes(ref, self.image_root, self.max_bytes)

    def _read_hashed(self, ref, real_root: str | None = None) -> tuple[bytes | None, str | None, str | None]:
        """(bytes, reason, sha256 hex): hashed in the pool thread (hashlib releases the GIL)."""
        data, reason = read_image_bytes(ref, self.image_root, self.max_bytes, real_root)
        return data, reason, None if data is None else hashlib.sha256(data).hexdigest()

    def _read_all(self, pool, refs: list) -> list[tuple[bytes | None, str | None, str | None]]:
        """``_read_hashed`` of every ref, in order: each worker takes one contiguous slice (one task
        per worker, not one per image: a warm night reads and hashes only, and a future and two
        thread handoffs per image cost more CPU than the read). The image root is resolved once
        for the slices."""
        root = os.path.realpath(self.image_root) if self.image_root is not None else None
        k = max(1, -(-len(refs) // self.workers))
        parts = pool.map(lambda part: [self._read_hashed(r, root) for r in part],
                         [refs[s:s + k] for s in range(0, len(refs), k)])
        return [x for part in parts for x in part]

    def _decode(self, data: bytes) -> tuple[torch.Tensor | None, str | None]:
        img, reason = decode_image(data, self.max_pixels, draft_size=input_size(self.cfg))
        if img is None:
            return None, reason
        try:
            return self._transform(img), None
        except Exception:  # a decodable but unusable image must not sink the whole batch
            return None, CORRUPT

    def embed(self, refs: list[str | None], progress: bool = False) -> EmbeddingResult:
        n = len(refs)
        res = EmbeddingResult(
            vectors=np.full((n, EMBED_DIM), np.nan, dtype=np.float32), ok=np.zeros(n, dtype=bool),
            reasons=[None] * n, digests=[None] * n, n_computed=0, n_cached=0, n_reused=0,
        )
        run = _Run()
        chunk = max(4 * self.cfg.batch_size, 64)  # bounds the bytes held in memory
        with events.stage("image.embed", images=n), ThreadPoolExecutor(self.workers) as pool, \
                ThreadPoolExecutor(1, thread_name_prefix="embedding-cache") as run.writer, tqdm(
                    total=n, disable=not progress, unit="img", desc="image embeddings") as bar:
            for start in range(0, n, chunk):
                rows = range(start, min(n, start + chunk))
                for i, digest, data in self._lookup_chunk(refs, rows, pool, res, run):
                    run.inflight.append((i, digest, pool.submit(self._decode, data)))
                    while len(run.inflight) > self.prefetch:
                        self._collect(run, res)
                bar.update(len(rows))
            while run.inflight:
                self._collect(run, res)
            self._flush(run, res)
            for write in run.writes:  # a failed write fails the call, as it did in line
                write.result()
        for i in run.repeats:  # identical bytes seen earlier in this call: that row's outcome
            digest = res.digests[i]
            if digest in run.done:
                res.vectors[i], res.ok[i] = res.vectors[run.done[digest]], True
                res.n_reused += 1
            else:
                res.reasons[i] = run.failed[digest]
        return res

    def _lookup_chunk(self, refs, rows, pool, res: EmbeddingResult, run: "_Run") -> list[tuple[int, str, bytes]]:
        """Read and hash a chunk; serve cache hits; return the distinct new images to decode."""
        pending: dict[str, tuple[int, bytes]] = {}  # distinct digests first seen in this chunk
        for i, (data, reason, digest) in zip(rows, self._read_all(pool, [refs[i] for i in rows])):
            if data is None:
                res.reasons[i] = reason
                continue
            res.digests[i] = digest
            if digest in run.seen or digest in pending:
                run.repeats.append(i)
            else:
                pending[digest] = (i, data)
        run.seen.update(pending)
        with events.stage("image.cache"):
            hits = self.cache.get_many(pending) if self.cache is not None and pending else {}
        for digest, vec in hits.items():
            i, _ = pending.pop(digest)
            res.vectors[i], res.ok[i], run.done[digest] = vec, True, i
            res.n_cached += 1
        return [(i, digest, data) for digest, (i, data) in pending.items()]

    def _collect(self, run: "_Run", res: EmbeddingResult) -> None:
        """Take the oldest decode in flight; run the CNN once a batch is full."""
        i, digest, fut = run.inflight.popleft()
        x, reason = fut.result()
        if x is None:
            res.reasons[i] = run.failed[digest] = reason
        else:
            run.batch.append((i, digest, x))
        if len(run.batch) >= self.cfg.batch_size:
            self._flush(run, res)

    def _flush(self, run: "_Run", res: EmbeddingResult) -> None:
        part, run.batch = run.batch, []
        if not part:
            return
        with events.stage("image.forward", images=len(part)):  # the runtime stacks only if it must
            feats = embed_forward(self.model, [x for _, _, x in part]).numpy()
        for (i, digest, _), vec in zip(part, feats):
            res.vectors[i], res.ok[i], run.done[digest] = vec, True, i
        res.n_computed += len(part)
        if self.cache is not None:
            run.writes.append(run.writer.submit(self._store, {d: feats[k] for k, (_, d, _) in enumerate(part)}))

    def _store(self, vectors: dict[str, np.ndarray]) -> None:
        with events.stage("image.cache", writes=len(vectors)):
            self.cache.put_many(vectors)


@dataclass
class _Run:
    """Per-call bookkeeping so identical bytes are decoded and embedded once per call."""

    done: dict[str, int] = field(default_factory=dict)  # digest -> row holding its vector
    failed: dict[str, str] = field(default_factory=dict)  # digest -> decode failure reason
    seen: set[str] = field(default_factory=set)  # digests cached, in flight or done
    repeats: list[int] = field(default_factory=list)  # rows repeating an earlier row's bytes
    inflight: deque = field(default_factory=deque)  # (row, digest, decode future), oldest first
    batch: list = field(default_factory=list)  # decoded, waiting for the forward pass
    writer: ThreadPoolExecutor | None = None  # the one cache-writer thread of this call
    writes: list = field(default_factory=list)  # its pending put_many futures
