"""Local copies of registry versions (catalog_classifier/model_copies.py): a failed or killed
download leaves nothing that lasts, and copies nobody loaded for cache.max_idle_days are
removed, never the two loaded last. Real model versions in a temporary sqlite MLflow store."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.config import CacheConfig, TrackingConfig
from catalog_classifier.model_copies import LAST_USED
from catalog_classifier.tracking import load_model, log_model_version

DAY = 86400


@pytest.fixture(scope="module")
def store(trained_model_dir, tmp_path_factory):
    """Three registered versions of the demo model (each its own run, so its own copy)."""
    tmp = tmp_path_factory.mktemp("copies")
    tc = TrackingConfig(tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifact_location=str(tmp / "mlruns"))
    clf = CatalogClassifier.load(trained_model_dir)
    versions = [log_model_version(clf, trained_model_dir, {"oof_accuracy": 0.9}, {"n": n}, tc)["version"]
                for n in range(3)]
    return tc, versions


def _copies(folder):
    return sorted(p.name for p in folder.iterdir())


def _age(path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_idle_copies_and_dead_downloads_are_removed(store, demo_catalog, heldout_items, tmp_path):
    tc, (v1, v2, v3) = store
    cache = CacheConfig(models_dir=str(tmp_path / "copies"), max_idle_days=30)
    folder = tmp_path / "copies"
    first = {v: load_model(f"models:/catalog-classifier/{v}", tc, cache) for v in (v1, v2, v3)}
    names = _copies(folder)
    assert len(names) == 3 and all((folder / n / LAST_USED).exists() for n in names)
    by_version = {v: next(n for n in names if f"-v{v}-" in n) for v in (v1, v2, v3)}

    # leftovers of downloads: a killed one (its process is gone) and one still running here
    dead = folder / f"{by_version[v1]}.tmp{_dead_pid()}"
    live = folder / f"{by_version[v2]}.tmp{os.getpid()}"
    fresh_dead = folder / f"{by_version[v3]}.tmp{_dead_pid()}"
    for d in (dead, live, fresh_dead):
        (d / "artifacts").mkdir(parents=True)
        (d / "artifacts" / "half.bin").write_bytes(b"\0" * 1000)
    _age(dead, 0.1)
    _age(live, 0.1)

    # v1 and v2 idle 40 and 39 days; loading v3 keeps v3 and v2 (the two loaded last), drops v1
    _age(folder / by_version[v1] / LAST_USED, 40)
    _age(folder / by_version[v2] / LAST_USED, 39)
    load_model(f"models:/catalog-classifier/{v3}", tc, cache)
    left = _copies(folder)
    assert by_version[v1] not in left and dead.name not in left
    assert {by_version[v2], by_version[v3], live.name, fresh_dead.name} == set(left)
    assert time.time() - (folder / by_version[v3] / LAST_USED).stat().st_mtime < 60

    # asked for again, v1 comes back whole and scores as before; now v2 is not among the two
    # loaded last and goes
    again = load_model(f"models:/catalog-classifier/{v1}", tc, cache)
    assert {by_version[v1], by_version[v3]} == set(_copies(folder)) - {live.name, fresh_dead.name}
    items = heldout_items.head(20)
    p_before, _, _ = first[v1].clf.predict_proba(items, demo_catalog.image_root)
    p_after, _, _ = again.clf.predict_proba(items, demo_catalog.image_root)
    np.testing.assert_array_equal(p_after, p_before)

    # 0 keeps every copy, however idle; back at 30, the idle one goes at the next load
    _age(folder / by_version[v3] / LAST_USED, 400)
    load_model(f"models:/catalog-classifier/{v1}", tc, CacheConfig(models_dir=str(folder), max_idle_days=0))
    assert by_version[v3] in _copies(folder)
    load_model(f"models:/catalog-classifier/{v2}", tc, cache)
    assert {by_version[v1], by_version[v2]} == set(_copies(folder)) - {live.name, fresh_dead.name}


def test_a_failed_download_leaves_nothing(store, tmp_path, monkeypatch):
    import mlflow.artifacts

    tc, (v1, _, _) = store
    cache = CacheConfig(models_dir=str(tmp_path / "copies"))
    real = mlflow.artifacts.download_artifacts

    def broken(artifact_uri, dst_path):  # the disk fills half-way through
        real(artifact_uri=artifact_uri, dst_path=dst_path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", broken)
    with pytest.raises(OSError, match="No space left"):
        load_model(f"models:/catalog-classifier/{v1}", tc, cache)
    assert _copies(tmp_path / "copies") == []
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", real)
    assert load_model(f"models:/catalog-classifier/{v1}", tc, cache).version == v1
    assert len(_copies(tmp_path / "copies")) == 1


def test_two_processes_fetching_one_version_both_load_it(store, tmp_path, monkeypatch):
    """Another process renames its finished download first: this one's rename fails, and the
    load goes on with the copy that is there, leaving no temp folder."""
    import mlflow.artifacts

    tc, (v1, _, _) = store
    folder = tmp_path / "copies"
    real = mlflow.artifacts.download_artifacts

    def racing(artifact_uri, dst_path):
        real(artifact_uri=artifact_uri, dst_path=dst_path)
        other = dst_path.rsplit(".tmp", 1)[0]  # the other process finishes under the final name
        real(artifact_uri=artifact_uri, dst_path=other + ".tmp1")
        os.rename(other + ".tmp1", other)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", racing)
    assert load_model(f"models:/catalog-classifier/{v1}", tc, CacheConfig(models_dir=str(folder))).version == v1
    assert len(_copies(folder)) == 1 and ".tmp" not in _copies(folder)[0]


def test_models_dir_that_is_a_file_is_one_clear_error(store, tmp_path):
    tc, (v1, _, _) = store
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(NotADirectoryError, match="cache.models_dir"):
        load_model(f"models:/catalog-classifier/{v1}", tc, CacheConfig(models_dir=str(afile)))


def test_ray_nodes_keep_only_the_models_in_use(trained_model_dir, demo_catalog, heldout_items, tmp_path,
                                                monkeypatch):
    """A Ray night ships its model to every node, where actors unpack it once per content under
    the node's temp folder: whole or not at all, and with the registry copies' retention."""
    import shutil
    import tempfile

    from catalog_classifier.nightly.batch.engines.ray import _unpack_model, pack_model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "node"))  # this node's temp folder
    blobs = []
    for n in range(3):  # three model contents, as three nights after retraining would ship
        d = tmp_path / f"v{n}" / "model"
        shutil.copytree(trained_model_dir, d)
        (d / "night.txt").write_text(str(n))
        blobs.append(pack_model(d))
    paths = [_unpack_model(b, 30) for b in blobs]
    root = tmp_path / "node" / "catalog-classifier-models"
    copies = [p.parent for p in paths]
    assert len(set(copies)) == 3 and set(_copies(root)) == {c.name for c in copies}
    assert all((c / LAST_USED).exists() for c in copies)
    (paths[0] / "kept.txt").write_text("x")
    assert _unpack_model(blobs[0], 30) == paths[0] and (paths[0] / "kept.txt").exists()  # not unpacked again

    dead = root / f"{copies[1].name}.tmp{_dead_pid()}"  # an actor killed while unpacking
    (dead / "model").mkdir(parents=True)
    _age(dead, 0.1)
    _age(copies[0] / LAST_USED, 40)
    _age(copies[1] / LAST_USED, 39)
    assert _unpack_model(blobs[2], 30) == paths[2]
    assert set(_copies(root)) == {copies[1].name, copies[2].name}  # the two loaded last stay

    items = heldout_items.head(20)
    p_copy, _, _ = CatalogClassifier.load(paths[2]).predict_proba(items, demo_catalog.image_root)
    p_orig, _, _ = CatalogClassifier.load(trained_model_dir).predict_proba(items, demo_catalog.image_root)
    np.testing.assert_array_equal(p_copy, p_orig)
