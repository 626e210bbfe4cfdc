"""Offline harness for the climb's routing policy (issue #14): dump what the router is fitted on.

For each outer fold of the nested protocol (the same folds as ``evaluate``), trains the product
on the fold's training part and writes to ``<out>/fold<k>.npz``:
  cal_p, cal_y   the fold model's inner out-of-fold calibrated probabilities and labels on the
                 rule-free rows (what ``HierarchicalRouter.fit`` sees)
  test_p, test_y the held-out rows' probabilities and labels (fold-model class index, -1: a class
                 the fold model lacks)
  labels         the fold model's label strings
Routing policies are then compared in seconds on these files (no rules, model only).

    CATALOG_CLASSIFIER_THREADS=1 .venv/bin/python scripts/hier_dump.py \
        --catalog data/flipkart1050/flipkart_com-ecommerce_sample_1050.csv \
        --config data/flipkart1050/catalog.yaml --level 2 --out /tmp/hier_dump/fk2 [--fold 0]
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np

from catalog_classifier.catalog import read_catalog
from catalog_classifier.catalog.cleaning import title_key
from catalog_classifier.classifier import CatalogClassifier
from catalog_classifier.config import load_config
from stacking import make_folds


def nested_rows(catalog: str, config: str | None, level: int, folds: int):
    """(config at ``level``, catalog, labelled items, their label Series, sorted labels, class
    indices, outer folds): the rows and folds ``evaluate`` uses, shared with the scripts that
    read this dump so their rows line up with its folds."""
    cfg = load_config(config).with_overrides(catalog={"label_depth": level})
    cat = read_catalog(catalog, cfg.catalog)
    labels_s = CatalogClassifier(cfg).labels_for(cat.items)
    keep = labels_s.notna().to_numpy()
    items, labels_s = cat.items.loc[keep].reset_index(drop=True), labels_s[keep].reset_index(drop=True)
    labels = sorted(labels_s.unique())
    y = labels_s.map({l: i for i, l in enumerate(labels)}).to_numpy()
    groups = np.array([title_key(t) for t in items["title"]], dtype=object)
    return cfg, cat, items, labels_s, labels, y, make_folds(y, folds, cfg.stack.seed, groups)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalog", required=True)
    ap.add_argument("--config")
    ap.add_argument("--level", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fold", type=int, action="append", help="only these outer folds (repeatable)")
    a = ap.parse_args()
    cfg, cat, items, labels_s, labels, y, fold = nested_rows(a.catalog, a.config, a.level, a.folds)
    emb, _ = CatalogClassifier(cfg).embed_images(items, cat.image_root, progress=False)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for k in a.fold or range(a.folds):
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        clf = CatalogClassifier(copy.deepcopy(cfg))
        clf.fit(items.iloc[tr], labels_s.iloc[tr], cat.image_root, progress=False,
                embeddings=None if emb is None else emb[tr])
        p, _, _ = clf.predict_proba(items.iloc[te], cat.image_root, embeddings=None if emb is None else emb[te])
        idx = {l: i for i, l in enumerate(clf.labels_)}
        test_y = np.array([idx.get(labels[c], -1) for c in y[te]])
        m = clf.stack_.threshold_rows_
        np.savez_compressed(out / f"fold{k}.npz", cal_p=clf.stack_.oof_proba_[m], cal_y=clf.stack_.y_[m],
                            test_p=p, test_y=test_y, labels=np.array(clf.labels_, dtype=object))
        print(f"fold {k}: {len(tr)} train, {len(te)} test -> {out / f'fold{k}.npz'}", flush=True)


if __name__ == "__main__":
    main()
