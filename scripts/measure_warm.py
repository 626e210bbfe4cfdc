"""Hand measurement for issue 13 item 3: where the warm night (no CNN) spends its time.

Trains a small real model on the demo catalog (3 folds, 3 char-CNN epochs: inference cost
does not depend on either), fills the embedding cache, then scores the catalog in nightly
chunks (256 rows) with every embedding cached, timing each stage exclusively (the bench's
StageTimer). Prints each stage's share of the warm scoring time.

    CATALOG_CLASSIFIER_THREADS=2 PYTHONPATH=. .venv/bin/python scripts/measure_warm.py [MODEL_DIR]
"""
from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STAGES = (
    ("catalog_classifier.classifier", "CatalogClassifier.embed_images", "embeddings (cache reads)"),
    ("catalog_classifier.classifier", "CatalogClassifier.inputs", "text featurize"),
    ("catalog_classifier.models.char_cnn", "CharCNNClassifier.predict_proba", "char-CNN"),
    ("catalog_classifier.models.linear_text", "LinearText._features", "TF-IDF transform"),
    ("catalog_classifier.models.linear_text", "LinearText.predict_proba", "TF-IDF LR"),
    ("catalog_classifier.models.image_head", "ImageHead.predict_proba", "image head"),
    ("catalog_classifier.classifier", "CatalogClassifier._passthrough", "tabular + sentencepiece"),
    ("stacking.stack", "build_meta_matrix", "meta matrix"),
    ("stacking.stack", "raw_scores", "LightGBM"),
    ("catalog_classifier.classifier", "CatalogClassifier.route", "route (thresholds, rules)"),
)


def _install(timer):
    for mod, attr, stage in STAGES:
        m = importlib.import_module(mod)
        owner, name = (m, attr) if "." not in attr else (getattr(m, attr.split(".")[0]), attr.split(".")[1])
        setattr(owner, name, timer.wrap(getattr(owner, name), stage))


def main(model_dir: str | None = None) -> None:
    torch.set_num_threads(int(os.environ.get("CATALOG_CLASSIFIER_THREADS", "2")))
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import DEMO_CSV, DEMO_IMAGES, fast_config

    from catalog_classifier.bench.stages import StageTimer
    from catalog_classifier.catalog import read_catalog
    from catalog_classifier.classifier import CatalogClassifier

    cfg = fast_config()
    items = read_catalog(DEMO_CSV, cfg.catalog).items
    if model_dir and (Path(model_dir) / "config.json").exists():
        clf = CatalogClassifier.load(model_dir)
    else:
        t = time.perf_counter()
        clf = CatalogClassifier(cfg).fit(items, image_root=str(DEMO_IMAGES), progress=False)
        print(f"trained in {time.perf_counter() - t:.0f} s")
        if model_dir:
            clf.save(model_dir)
    clf.predict(items, image_root=str(DEMO_IMAGES))  # the cache now holds every embedding
    timer = StageTimer()
    _install(timer)
    chunk = cfg.nightly.chunk_size
    for rep in range(3):
        timer.reset()
        t = time.perf_counter()
        for s in range(0, len(items), chunk):
            clf.predict(items.iloc[s:s + chunk].reset_index(drop=True), image_root=str(DEMO_IMAGES))
        total = time.perf_counter() - t
        print(f"repeat {rep}: {len(items) / total:.0f} items/s warm; shares:")
        for stage, sec in sorted(timer.totals.items(), key=lambda kv: -kv[1]):
            print(f"  {stage:28s} {100 * sec / total:5.1f}%")
        print(f"  {'other (per-chunk overhead)':28s} {100 * (total - sum(timer.totals.values())) / total:5.1f}%")


if __name__ == "__main__":
    main(*sys.argv[1:2])
