"""linear_text's logistic regression, one-vs-rest liblinear (dual or primal) vs multinomial lbfgs, on one fold.

    .venv/bin/python scripts/compare_linear_text_ovr.py ovr_dual 3   # then: ovr 3, mn 3, ovr_dual 2, ...

One fit per process (its peak RSS is the fit's); prints one JSON line: wall and CPU seconds,
peak RSS, held-out accuracy, macro-F1 and log-loss. The product's TF-IDF features are fitted on
the training part of fold 0 of StratifiedKFold(5, shuffle, seed 0) over the whole BigBasket
catalog at the given level. ``leaves=N`` instead of a level: the first 4,000 of the benchmark's
6,000 taxonomy rows relabelled to N meaningless leaves (bench/taxonomy.py), for the cost only.
Results: reports/linear_text_ovr.json.
"""
from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog_classifier.catalog import read_catalog  # noqa: E402
from catalog_classifier.catalog.labels import make_labels  # noqa: E402
from catalog_classifier.config import load_config  # noqa: E402
from catalog_classifier.features.text import item_texts  # noqa: E402
from catalog_classifier.models.linear_text import LinearText  # noqa: E402


def main(cand: str, level: int | str) -> dict:
    cfg = load_config(ROOT / "configs" / "bigbasket.yaml")
    items = read_catalog(ROOT.parent / "shared" / "datasets" / "bigbasket" / "BigBasket Products.csv", cfg.catalog).items
    if isinstance(level, str):  # leaves=N
        from bench.taxonomy import split_leaves

        items = items.sample(6000, random_state=cfg.stack.seed).sort_index().reset_index(drop=True)
        y = split_leaves(make_labels(items["category"], 1, 1), int(level.split("=")[1]), cfg.stack.seed)
    else:
        y = make_labels(items["category"], level, cfg.catalog.min_items_per_category)
    keep = y.notna().to_numpy()
    items, y = items[keep].reset_index(drop=True), y[keep].astype(str).to_numpy()
    texts = np.array(item_texts(items["title"], items["description"], cfg.catalog.max_text_chars), dtype=object)
    if isinstance(level, str):
        tr, te = np.arange(4000), np.arange(4000, len(y))
    else:
        tr, te = next(StratifiedKFold(5, shuffle=True, random_state=0).split(texts, y))
    lt = LinearText()
    F = lt._features(texts[tr], fit=True)
    classes, ytr = np.unique(y[tr], return_inverse=True)
    te = te[np.isin(y[te], classes)]  # held-out rows of classes the fit has seen
    G = lt._features(texts[te], fit=False)
    yte = np.searchsorted(classes, y[te])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = (OneVsRestClassifier(LogisticRegression(C=lt.C, solver="liblinear", dual=cand == "ovr_dual",
                                                random_state=0)) if cand.startswith("ovr")
         else LogisticRegression(C=lt.C, max_iter=1000, random_state=0))
    t, c = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(F, ytr)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    p = m.predict_proba(G)
    pred = p.argmax(1)
    return {"cand": cand, "level": level, "classes": len(classes), "features": F.shape[1], "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1), "rss_before_mb": round(rss0),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "acc": round(accuracy_score(yte, pred), 4),
            "macro_f1": round(f1_score(yte, pred, average="macro", labels=np.unique(yte)), 4),
            "log_loss": round(log_loss(yte, np.clip(p, 1e-12, 1), labels=np.arange(len(classes))), 4)}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("ovr", "ovr_dual", "mn"):
        sys.exit("usage: compare_linear_text_ovr.py ovr|ovr_dual|mn LEVEL|leaves=N")
    arg = sys.argv[2]
    print(json.dumps(main(sys.argv[1], arg if arg.startswith("leaves=") else int(arg))), flush=True)
