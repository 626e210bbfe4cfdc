"""Shared fixtures: real demo data and one small model trained once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.runner import SHARED  # the shared catalogs: one definition, with the benchmark

ROOT = Path(__file__).resolve().parents[1]
DEMO_CSV = ROOT / "data" / "flipkart1050" / "flipkart_com-ecommerce_sample_1050.csv"
DEMO_IMAGES = ROOT / "data" / "flipkart1050" / "images"

os.environ.setdefault("CATALOG_CLASSIFIER_THREADS", "2")


def require_dataset(path: Path) -> Path:
    """A test that needs a dataset fails loudly, naming it, when it is missing (never skips)."""
    if not path.exists():
        pytest.fail(f"dataset missing: {path} (the shared datasets live in ../shared/datasets; "
                    "elsewhere: make test SHARED=/path/to/datasets)", pytrace=False)
    return path


@pytest.fixture(scope="session", autouse=True)
def ray_model_copies_removed():
    """Ray actors (tests/test_ray_engine.py, the bench's engines) unpack each test model under
    this machine's temp folder, where the product keeps copies for cache.max_idle_days; a
    test session removes the ones it made."""
    import shutil
    import tempfile

    root = Path(tempfile.gettempdir()) / "catalog-classifier-models"
    before = set(root.iterdir()) if root.is_dir() else set()
    yield
    for p in (set(root.iterdir()) if root.is_dir() else set()) - before:
        shutil.rmtree(p, ignore_errors=True)


def fast_config(tmp_cache: Path | None = None, **overrides):
    """Small but real settings: 3 folds, 3 char-CNN epochs; same code paths as production."""
    from catalog_classifier.config import load_config

    cfg = load_config(ROOT / "data" / "flipkart1050" / "catalog.yaml")
    sections = {
        "stack": {"n_folds": 3, "sp_vocab_size": 500, "num_boost_round": 150},
        "models": {"char_cnn": {"epochs": 3, "max_len": 256}},
        "image": {"cache_dir": str(ROOT / ".cache" / "embeddings")},
        "cache": {"base_probas_dir": str(ROOT / ".cache" / "base-probas")},
        "catalog": {"image_root": str(DEMO_IMAGES)},
        "rules": {"rules_dir": str(ROOT / "rules")},
    }
    for k, v in overrides.items():
        if k == "models":  # per model: override single parameters, keep the others
            for name, params in v.items():
                sections["models"][name] = {**sections["models"].get(name, {}), **params}
        else:
            sections.setdefault(k, {}).update(v)
    return cfg.with_overrides(**sections)


@pytest.fixture(scope="session")
def demo_catalog():
    from catalog_classifier.catalog import read_catalog

    return read_catalog(DEMO_CSV, fast_config().catalog)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, demo_catalog):
    """A level-1 model trained on 80% of the demo catalog (the rest is held out), saved."""
    from catalog_classifier.classifier import CatalogClassifier

    items = demo_catalog.items
    train = items.sample(frac=0.8, random_state=0).sort_index()
    clf = CatalogClassifier(fast_config()).fit(train, image_root=demo_catalog.image_root, progress=False)
    path = tmp_path_factory.mktemp("model") / "model"
    clf.save(path)
    return path


@pytest.fixture(scope="session")
def heldout_items(demo_catalog, trained_model_dir):
    items = demo_catalog.items
    train = items.sample(frac=0.8, random_state=0)
    return items.drop(train.index).reset_index(drop=True)


@pytest.fixture(scope="session")
def depth2_model_dir(tmp_path_factory, demo_catalog):
    """A level-2 model (image head + linear text: the char-CNN adds cost, not paths) on the same 80%."""
    from catalog_classifier.classifier import CatalogClassifier

    train = demo_catalog.items.sample(frac=0.8, random_state=0).sort_index()
    cfg = fast_config(catalog={"label_depth": 2}, stack={"base_models": ["image_head", "linear_text"]})
    clf = CatalogClassifier(cfg).fit(train, image_root=demo_catalog.image_root, progress=False)
    path = tmp_path_factory.mktemp("model2") / "model"
    clf.save(path)
    return path
