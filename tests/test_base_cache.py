"""The text base models' content cache (catalog_classifier/base_cache.py) on real demo items:
served rows equal computed ones, only new or changed items run through the models, the key
follows the model's files, and a night served from the cache writes the same rows."""
from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest

from catalog_classifier import base_cache
from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.nightly.batch.job import run_nightly

from conftest import DEMO_CSV, DEMO_IMAGES
from nightly_helpers import night_config, read_predictions


def _loaded(model_dir, cache_dir: str) -> CatalogClassifier:
    clf = CatalogClassifier.load(model_dir)
    clf.config = clf.config.with_overrides(cache={"base_probas_dir": cache_dir})
    return clf


def _keys(cache_dir) -> set[str]:
    with sqlite3.connect(cache_dir / base_cache.FILENAME) as conn:
        return {k for (k,) in conn.execute("SELECT DISTINCT backbone FROM embeddings")}


def test_cached_rows_equal_computed_ones(depth2_model_dir, heldout_items, tmp_path):
    items = heldout_items.iloc[:120].reset_index(drop=True)
    plain = _loaded(depth2_model_dir, "")
    cached = _loaded(depth2_model_dir, str(tmp_path))
    want = plain.predict(items, str(DEMO_IMAGES))
    cold = cached.predict(items, str(DEMO_IMAGES))
    assert cached.last_base_cache_stats_ == {"hits": 0, "misses": len(items)}
    warm = cached.predict(items, str(DEMO_IMAGES))
    assert cached.last_base_cache_stats_ == {"hits": len(items), "misses": 0}
    pd.testing.assert_frame_equal(cold, want)
    pd.testing.assert_frame_equal(warm, want)
    # the leaf stack and the depth-1 ancestor stack each keep their own text models' rows
    assert len(_keys(tmp_path)) == 2
    assert plain.__dict__["_base_caches"] == {("stack", ("", 30)): None, ("ancestors/depth1", ("", 30)): None}


def test_only_changed_items_are_recomputed(depth2_model_dir, heldout_items, tmp_path):
    items = heldout_items.iloc[:60].reset_index(drop=True)
    cached = _loaded(depth2_model_dir, str(tmp_path))
    cached.predict_proba(items, str(DEMO_IMAGES))
    changed = items.copy()
    changed.loc[7, "title"] = "Stainless steel analog wrist watch for men"
    changed.loc[9, "brand"] = "a brand never seen"
    proba, base, _ = cached.predict_proba(changed, str(DEMO_IMAGES))
    assert cached.last_base_cache_stats_ == {"hits": 58, "misses": 2}
    want, want_base, _ = _loaded(depth2_model_dir, "").predict_proba(changed, str(DEMO_IMAGES))
    np.testing.assert_array_equal(proba, want)
    for name in want_base:
        np.testing.assert_array_equal(base[name], want_base[name])


def test_key_follows_the_model_files(depth2_model_dir, trained_model_dir, tmp_path):
    a, b = CatalogClassifier.load(depth2_model_dir), CatalogClassifier.load(trained_model_dir)
    names = base_cache.cached_models(a.stack_)
    assert names == ["linear_text"]  # image_head reads embeddings: never cached here
    assert base_cache.cached_models(b.stack_) == ["char_cnn", "linear_text"]
    key = base_cache.stack_key(depth2_model_dir / "stack", names, a.versions_)
    assert key == base_cache.stack_key(depth2_model_dir / "stack", names, dict(a.versions_))
    assert key != base_cache.stack_key(trained_model_dir / "stack", names, b.versions_)
    assert key != base_cache.stack_key(depth2_model_dir / "stack", names, {**a.versions_, "scikit-learn": "0"})
    copy = tmp_path / "stack"
    shutil.copytree(depth2_model_dir / "stack", copy)
    assert base_cache.stack_key(copy, names, a.versions_) == key  # content, not the path
    (copy / "base" / "linear_text" / "params.json").write_text('{"params": {}, "tuples": []}')
    assert base_cache.stack_key(copy, names, a.versions_) != key


def test_unsaved_or_switched_off_is_not_cached(depth2_model_dir, tmp_path):
    clf = CatalogClassifier.load(depth2_model_dir)
    assert base_cache.for_stack(str(tmp_path), clf.stack_, None, clf.versions_) is None
    assert base_cache.for_stack("", clf.stack_, depth2_model_dir / "stack", clf.versions_) is None
    assert base_cache.for_stack(str(tmp_path), clf.stack_, depth2_model_dir / "stack", clf.versions_) is not None


@pytest.mark.slow
def test_a_night_from_the_cache_writes_the_same_rows(trained_model_dir, tmp_path):
    cfg = night_config(chunk_size=128, cache={"base_probas_dir": str(tmp_path / "cache")})
    clf = CatalogClassifier.load(trained_model_dir)
    run_nightly(DEMO_CSV, tmp_path / "cold", clf, cfg, progress=False, date="2026-01-01")
    assert (tmp_path / "cache" / base_cache.FILENAME).exists()  # the run's setting reached the model
    run_nightly(DEMO_CSV, tmp_path / "warm", clf, cfg, progress=False, date="2026-01-01")
    assert clf.last_base_cache_stats_["misses"] == 0
    cold, warm = read_predictions(tmp_path / "cold"), read_predictions(tmp_path / "warm")
    drop = [c for c in cold.columns if c in ("run_id", "scored_at")]
    pd.testing.assert_frame_equal(cold.drop(columns=drop), warm.drop(columns=drop))
