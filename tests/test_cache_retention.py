"""The content caches forget what is no longer used (features/cache_sqlite.py, cache.max_idle_days):
on real demo images and a real model's text rows, rows idle longer than the setting are deleted
once a day, a read counts as a use, and a cache written before retention existed keeps its rows.
Idleness is made by dating rows back in the file itself: the product has no clock to set."""
from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from catalog_classifier import base_cache
from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.config import ImageConfig
from catalog_classifier.features.backbone import load_backbone
from catalog_classifier.features.cache_sqlite import EmbeddingCache, today
from catalog_classifier.features.embeddings import ImageEmbedder

from conftest import DEMO_IMAGES


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(ImageConfig(device="cpu"))


@pytest.fixture(scope="module")
def images() -> list[str]:
    assert DEMO_IMAGES.is_dir(), f"demo images missing: {DEMO_IMAGES}"
    return [str(p) for p in sorted(DEMO_IMAGES.glob("*.jpg"))[:6]]


def _sql(path: Path, query: str, *args):
    with sqlite3.connect(path) as conn:
        return conn.execute(query, args).fetchall()


def _age(path: Path, days: int, where: str = "1", *args) -> None:
    """Date rows' last use ``days`` back and forget that today's pruning ran."""
    _sql(path, f"UPDATE last_used SET day = ? WHERE {where}", today() - days, *args)
    _sql(path, "DELETE FROM cache_meta")


def _embedder(backbone, cache: Path, idle: int) -> ImageEmbedder:
    return ImageEmbedder(ImageConfig(device="cpu", cache_dir=str(cache)), model=backbone, max_idle_days=idle)


def test_idle_image_rows_are_deleted_and_recomputed(backbone, images, tmp_path):
    first = _embedder(backbone, tmp_path, 30).embed(images)
    assert first.n_computed == len(images)
    db = tmp_path / "embeddings.sqlite"
    _age(db, 31, "sha256 IN (?, ?)", first.digests[0], first.digests[1])  # gone from the catalog a month ago
    _age(db, 29, "sha256 = ?", first.digests[2])  # still inside the window
    again = _embedder(backbone, tmp_path, 30)
    res = again.embed(images)
    assert again.cache.pruned == 2
    assert (res.n_computed, res.n_cached) == (2, len(images) - 2)
    np.testing.assert_allclose(res.vectors, first.vectors, rtol=1e-5, atol=1e-6)
    assert {d for (d,) in _sql(db, "SELECT sha256 FROM last_used WHERE day = ?", today())} == set(first.digests)


def test_a_read_counts_as_a_use_and_pruning_runs_once_a_day(backbone, images, tmp_path):
    first = _embedder(backbone, tmp_path, 30).embed(images)
    db = tmp_path / "embeddings.sqlite"
    _age(db, 40)
    reader = _embedder(backbone, tmp_path, 0)  # pruning off: reads only
    assert reader.embed(images).n_cached == len(images)
    assert reader.cache.pruned is None
    pruner = _embedder(backbone, tmp_path, 30)
    assert pruner.embed(images).n_cached == len(images)
    assert pruner.cache.pruned == 0  # every row was read today
    _age(db, 40)
    _sql(db, "INSERT INTO cache_meta VALUES ('pruned_on', ?)", today())  # today's pruning already ran
    late = _embedder(backbone, tmp_path, 30)
    assert late.embed(images).n_cached == len(images) and late.cache.pruned is None
    assert len(first.digests) == len(_sql(db, "SELECT * FROM embeddings"))


def test_a_cache_from_before_retention_keeps_its_rows(backbone, images, tmp_path):
    new = tmp_path / "new"
    first = _embedder(backbone, new, 30).embed(images)
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / "embeddings.sqlite") as conn:  # the table as releases before wrote it
        conn.execute("CREATE TABLE embeddings (backbone TEXT NOT NULL, sha256 TEXT NOT NULL, vec BLOB NOT NULL,"
                     " PRIMARY KEY (backbone, sha256)) WITHOUT ROWID")
        conn.executemany("INSERT INTO embeddings VALUES (?, ?, ?)",
                         _sql(new / "embeddings.sqlite", "SELECT backbone, sha256, vec FROM embeddings"))
    upgraded = _embedder(backbone, old, 30)
    res = upgraded.embed(images)
    assert (res.n_cached, upgraded.cache.pruned) == (len(images), 0)
    np.testing.assert_array_equal(res.vectors, first.vectors)
    assert _sql(old / "embeddings.sqlite", "SELECT DISTINCT day FROM last_used") == [(today(),)]


def test_rows_of_a_model_no_longer_served_are_deleted(trained_model_dir, depth2_model_dir, heldout_items,
                                                      tmp_path):
    """A retrain leaves the old version's text rows behind whole. A month after the switch they are
    gone, while the rows the served version read last night are all still hits."""
    items = heldout_items.iloc[:40].reset_index(drop=True)
    cache = tmp_path / "cache"

    def load(model_dir: Path) -> CatalogClassifier:
        clf = CatalogClassifier.load(model_dir)
        clf.config = clf.config.with_overrides(cache={"base_probas_dir": str(cache)})
        return clf

    db = cache / base_cache.FILENAME
    load(trained_model_dir).predict(items, str(DEMO_IMAGES))  # the retired version's last night
    retired = {k for (k,) in _sql(db, "SELECT DISTINCT backbone FROM embeddings")}
    want = load(depth2_model_dir).predict(items, str(DEMO_IMAGES))  # the version served since
    served = {k for (k,) in _sql(db, "SELECT DISTINCT backbone FROM embeddings")} - retired
    assert retired and served
    _age(db, 31)
    _sql(db, f"UPDATE last_used SET day = ? WHERE backbone IN ({','.join('?' * len(served))})",
         today() - 1, *served)
    clf = load(depth2_model_dir)
    got = clf.predict(items, str(DEMO_IMAGES))
    assert clf.last_base_cache_stats_ == {"hits": len(items), "misses": 0}
    pd.testing.assert_frame_equal(got, want)
    assert sum(c.store.pruned or 0 for c in clf.__dict__["_base_caches"].values() if c) == len(items) * len(retired)
    assert {k for (k,) in _sql(db, "SELECT DISTINCT backbone FROM embeddings")} == served
    assert {k for (k,) in _sql(db, "SELECT DISTINCT backbone FROM last_used")} == served


def test_idle_image_files_are_deleted_and_recomputed(backbone, images, tmp_path):
    """The file-per-image layout (cache_layout: files, a shared folder) keeps to the same
    setting: a read sets a file's time, and the first use of a day deletes idle vectors of every
    key and a killed writer's temp files."""
    cfg = ImageConfig(device="cpu", cache_dir=str(tmp_path), cache_layout="files")
    first = ImageEmbedder(cfg, model=backbone, max_idle_days=30).embed(images)
    files = {p.stem: p for p in tmp_path.rglob("*.f32")}
    assert set(files) == set(first.digests)
    for d in first.digests[:2]:  # gone from the catalog a month ago
        _file_age(files[d], 31)
    _file_age(files[first.digests[2]], 29)  # still inside the window
    retired = tmp_path / "0123456789abcdef" / "ab" / ("ab" * 32 + ".f32")  # a backbone no longer served
    retired.parent.mkdir(parents=True)
    retired.write_bytes(files[first.digests[0]].read_bytes())
    _file_age(retired, 31)
    killed = files[first.digests[3]].parent / ".half.tmp"  # a writer killed mid-write
    killed.write_bytes(b"\0" * 10)
    _file_age(killed, 2)
    (tmp_path / ".pruned_on").unlink()  # today's pruning ran at the first embed

    again = ImageEmbedder(cfg, model=backbone, max_idle_days=30)
    res = again.embed(images)
    assert again.cache.pruned == 3 and not retired.exists() and not killed.exists()
    assert (res.n_computed, res.n_cached) == (2, len(images) - 2)
    np.testing.assert_allclose(res.vectors, first.vectors, rtol=1e-5, atol=1e-6)
    assert all(time.time() - files[d].stat().st_mtime < 600 for d in first.digests)  # read or written today

    for d in first.digests:  # idle again, but today's pruning already ran: nothing goes
        _file_age(files[d], 40)
    late = ImageEmbedder(cfg, model=backbone, max_idle_days=30)
    assert late.embed(images).n_cached == len(images) and late.cache.pruned is None
    off = ImageEmbedder(cfg, model=backbone, max_idle_days=0)  # 0 keeps everything, on any day
    (tmp_path / ".pruned_on").unlink()
    for d in first.digests:
        _file_age(files[d], 40)
    assert off.embed(images).n_cached == len(images) and off.cache.pruned is None


def _file_age(path: Path, days: float) -> None:
    t = time.time() - days * 86400
    os.utime(path, (t, t))
