"""linear_text's logistic regression, one-vs-rest liblinear vs multinomial lbfgs, on one fold.

    .venv/bin/python scripts/compare_linear_text_ovr.py ovr 3   # then: mn 3, ovr 2, mn 2

One fit per process (its peak RSS is the fit's); prints one JSON line: wall and CPU seconds,
peak RSS, held-out accuracy, macro-F1 and log-loss. The product's TF-IDF features are fitted on
the training part of fold 0 of StratifiedKFold(5, shuffle, seed 0) over the whole BigBasket
catalog at the given level. Results: reports/linear_text_ovr.json.
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


def main(cand: str, level: int) -> dict:
    cfg = load_config(ROOT / "configs" / "bigbasket.yaml")
    items = read_catalog(ROOT.parent / "shared" / "datasets" / "bigbasket" / "BigBasket Products.csv", cfg.catalog).items
    y = make_labels(items["category"], level, cfg.catalog.min_items_per_category)
    keep = y.notna().to_numpy()
    items, y = items[keep].reset_index(drop=True), y[keep].astype(str).to_numpy()
    texts = np.array(item_texts(items["title"], items["description"], cfg.catalog.max_text_chars), dtype=object)
    tr, te = next(StratifiedKFold(5, shuffle=True, random_state=0).split(texts, y))
    lt = LinearText()
    F, G = lt._features(texts[tr], fit=True), lt._features(texts[te], fit=False)
    classes, ytr = np.unique(y[tr], return_inverse=True)
    yte = np.searchsorted(classes, y[te])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = (OneVsRestClassifier(LogisticRegression(C=lt.C, solver="liblinear", random_state=0)) if cand == "ovr"
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
    if len(sys.argv) != 3 or sys.argv[1] not in ("ovr", "mn"):
        sys.exit("usage: compare_linear_text_ovr.py ovr|mn LEVEL")
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))), flush=True)
