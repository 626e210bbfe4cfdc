"""Out-of-fold accuracy of the text base models alone (not the stack), held-out rows only.

The texts are the product's (``features.text.catalog_texts``, with the attribute names and
values the catalog settings ask for; ``--catalog-set spec_values=0`` to compare). Same grouped,
stratified folds as the stack (``stacking.folds.make_folds`` with ``title_key`` groups), each
model through the public estimator API (``models.create`` with the catalog's config,
``stacking.oof.out_of_fold_proba``). Prints accuracy, macro-F1 and fit+predict seconds.

    .venv/bin/python scripts/text_model_cv.py --config configs/bigbasket.yaml \
        --csv "../shared/datasets/bigbasket/BigBasket Products.csv" --level 2 --rows 8000 \
        --set char_cnn.epochs=3
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog_classifier.catalog import read_catalog  # noqa: E402
from catalog_classifier.catalog.cleaning import title_key  # noqa: E402
from catalog_classifier.classifier import CatalogClassifier  # noqa: E402
from catalog_classifier.config import load_config  # noqa: E402
from catalog_classifier.features.container import ItemInputs  # noqa: E402
from catalog_classifier.features.text import catalog_texts  # noqa: E402
from catalog_classifier.models import create  # noqa: E402
from stacking.folds import make_folds  # noqa: E402
from stacking.oof import out_of_fold_proba  # noqa: E402

DEMO = ("data/flipkart1050/catalog.yaml", "data/flipkart1050/flipkart_com-ecommerce_sample_1050.csv")


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=DEMO[0])
    ap.add_argument("--csv", default=DEMO[1])
    ap.add_argument("--level", type=int, default=1)
    ap.add_argument("--rows", type=int, default=0, help="random subsample of the labeled rows (0: all)")
    ap.add_argument("--folds", type=int, default=0, help="0: the config's stack.n_folds")
    ap.add_argument("--models", default="char_cnn,linear_text")
    ap.add_argument("--set", action="append", default=[], metavar="MODEL.PARAM=VALUE",
                    help="override one model parameter (JSON value), e.g. char_cnn.epochs=3")
    ap.add_argument("--catalog-set", action="append", default=[], metavar="PARAM=VALUE",
                    help="override one catalog setting (JSON value), e.g. spec_values=0")
    args = ap.parse_args(argv)
    if os.environ.get("CATALOG_CLASSIFIER_THREADS"):  # be kind to a shared CPU
        torch.set_num_threads(int(os.environ["CATALOG_CLASSIFIER_THREADS"]))

    cfg = load_config(ROOT / args.config)
    cfg = cfg.with_overrides(catalog={"label_depth": args.level,
                                      **{k: _value(v) for k, _, v in (c.partition("=") for c in args.catalog_set)}})
    for s in args.set:
        key, _, val = s.partition("=")
        name, _, param = key.partition(".")
        cfg.models.setdefault(name, {})
        cfg.models[name] = {**(cfg.models[name] or {}), param: _value(val)}
    items = read_catalog(ROOT / args.csv, cfg.catalog).items
    labels = CatalogClassifier(cfg).labels_for(items)
    keep = labels.notna().to_numpy()
    items, labels = items.loc[keep].reset_index(drop=True), labels[keep].reset_index(drop=True)
    if args.rows and args.rows < len(items):
        idx = np.sort(np.random.default_rng(0).choice(len(items), args.rows, replace=False))
        items, labels = items.iloc[idx].reset_index(drop=True), labels.iloc[idx].reset_index(drop=True)
    names = sorted(labels.unique())
    y = labels.map({c: i for i, c in enumerate(names)}).to_numpy(dtype=np.int64)
    texts = np.array(catalog_texts(items, cfg.catalog), dtype=object)  # as the product reads them
    X = ItemInputs(texts, texts)
    groups = np.array([title_key(t) for t in items["title"]], dtype=object)
    n_folds = args.folds or cfg.stack.n_folds
    fold = make_folds(y, n_folds, cfg.stack.seed, groups)
    print(f"{args.config} L{args.level}: {len(y)} rows, {len(names)} classes, {n_folds} folds")
    for name in args.models.split(","):
        est = create(name, cfg)
        t0 = time.perf_counter()
        p = out_of_fold_proba(est, X, y, fold, len(names))
        sec = time.perf_counter() - t0
        pred = p.argmax(1)
        print(f"  {name:12s} acc {accuracy_score(y, pred):.4f}  macro-F1 "
              f"{f1_score(y, pred, average='macro'):.4f}  {sec:6.1f} s ({sec / n_folds:.1f} s/fold)  "
              f"{json.dumps(cfg.models.get(name) or {})}", flush=True)


if __name__ == "__main__":
    main()
