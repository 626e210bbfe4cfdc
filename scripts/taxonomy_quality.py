"""Meta-classifier quality on real BigBasket levels (issue #14 item 5).

Step ``base``: the base layer's out-of-fold probabilities of a subsample (exactly what
``StackedClassifier.fit`` computes first; the base refit on all rows is skipped, the
out-of-fold figures never use it), saved to a pickle with y, folds and passthrough.
Step ``meta``: both meta-classifiers (multiclass LightGBM, top-K re-ranker) fitted out of
fold on that same layer, scored like ``evaluation_oof.oof_cross_validate`` (cross-fitted
thresholds), with the wall time of each meta.

    .venv/bin/python scripts/taxonomy_quality.py base DEPTH OUT.pkl ROWS [BASE_MODELS]
    .venv/bin/python scripts/taxonomy_quality.py meta OUT.pkl multiclass,rerank
"""
from __future__ import annotations

import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIGBASKET = ROOT.parent / "shared" / "datasets" / "bigbasket" / "BigBasket Products.csv"


def _config(depth: int, bases: str):
    from catalog_classifier.config import load_config

    cfg = load_config(ROOT / "configs" / "bigbasket.yaml")
    return cfg.with_overrides(catalog={"label_depth": depth}, models={"char_cnn": {"epochs": 3}},
                              stack={"base_models": bases.split(",")})


def base(depth: int, out: str, rows: int = 8000, bases: str = "char_cnn,linear_text,brand_prior") -> None:
    from catalog_classifier.catalog import read_catalog
    from catalog_classifier.catalog.cleaning import title_key
    from catalog_classifier.classifier import CatalogClassifier, _num_threads
    from catalog_classifier.features.tabular import TabularEncoder
    from catalog_classifier.features.tokens import TitleTokenizer
    from catalog_classifier import models as model_registry
    from stacking.folds import make_folds
    from stacking.oof import out_of_fold_proba

    cfg = _config(depth, bases)
    items = read_catalog(BIGBASKET, cfg.catalog).items
    items = items.sample(rows, random_state=cfg.stack.seed).sort_index().reset_index(drop=True)
    clf = CatalogClassifier(cfg)
    labels = clf.labels_for(items)
    keep = labels.notna().to_numpy()
    items, labels = items.loc[keep].reset_index(drop=True), labels[keep].reset_index(drop=True)
    names = sorted(labels.unique())
    y = labels.map({l: i for i, l in enumerate(names)}).to_numpy(np.int64)
    t0 = time.time()
    X, _ = clf.inputs(items)
    clf.tokenizer_ = TitleTokenizer.train(list(X.titles), cfg.stack.sp_vocab_size, seed=cfg.stack.seed)
    clf.tabular_ = TabularEncoder(cfg.stack.min_brand_count).fit(items)
    passthrough = clf._passthrough(items, X)
    groups = np.array([title_key(t) for t in X.titles], dtype=object)
    fold = make_folds(y, cfg.stack.n_folds, cfg.stack.seed, groups)
    oof = {}
    for n in clf.base_names:
        t1 = time.time()
        oof[n] = out_of_fold_proba(model_registry.create(n, cfg), X, y, fold, len(names))
        print(f"{n}: {time.time() - t1:.0f}s", flush=True)
    with open(out + ".tmp", "wb") as f:
        pickle.dump({"depth": depth, "labels": names, "y": y, "fold": fold, "base_oof": oof,
                     "passthrough": passthrough, "base_seconds": time.time() - t0,
                     "stack": cfg.stack.stack_params(), "threads": _num_threads()}, f)
    Path(out + ".tmp").rename(out)
    print(f"base layer: {len(y)} rows, {len(names)} classes, {time.time() - t0:.0f}s", flush=True)


def meta(path: str, kinds: list[str]) -> None:
    from catalog_classifier.evaluation import TARGETS, fill_missing
    from catalog_classifier.evaluation_oof import crossfit_accept
    from sklearn.metrics import f1_score
    from stacking import StackedClassifier

    d = pickle.load(open(path, "rb"))
    y, fold, C = d["y"], d["fold"], len(d["labels"])
    recs = []
    for kind in kinds:
        p = d["stack"]
        # the benchmark's budgeted meta for BigBasket level 2 (bench/runner.py), for both metas
        p.num_boost_round, p.learning_rate, p.early_stopping_rounds = 60, 0.2, 10
        p.max_classes_multiclass = 10**6 if kind == "multiclass" else 1
        st = StackedClassifier({}, p, progress=lambda m: print("  ", m, flush=True), num_threads=d["threads"])
        st.base_oof_, st.fold_, st.n_classes_ = d["base_oof"], fold, C
        t0 = time.time()
        oof_logits = st._fit_meta(y, d["passthrough"])
        meta_s = time.time() - t0
        st._calibrate(oof_logits, y)
        proba = fill_missing(st.oof_proba_)
        pred = proba.argmax(1)
        rec = {"level": d["depth"], "meta": kind, "n_items": int(len(y)), "n_classes": C,
               "accuracy": round(float((pred == y).mean()), 4),
               "macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
               "meta_seconds": round(meta_s, 1), "base_seconds": round(d["base_seconds"], 1),
               "base_models": sorted(d["base_oof"]), "meta_rounds": int(st.num_rounds_)}
        for t in TARGETS:
            acc = crossfit_accept(y, proba, fold, t, p)
            key = f"{int(round(t * 100)):03d}"
            rec[f"coverage_at_{key}"] = round(float(acc.mean()), 4)
            rec[f"precision_at_{key}"] = round(float((pred[acc] == y[acc]).mean()), 4) if acc.any() else None
        if kind == "rerank":
            rec["top_k_recall"] = round(float(st.reranker_.oof_recall_), 4)
        print(json.dumps(rec), flush=True)
        recs.append(rec)


if __name__ == "__main__":
    if sys.argv[1] == "base":
        base(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), *sys.argv[5:])
    else:
        meta(sys.argv[2], sys.argv[3].split(","))
