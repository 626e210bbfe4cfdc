"""Quality: one stack fit per (catalog, level), scored from its out-of-fold layer.

``CatalogClassifier.fit`` already holds a K-fold out-of-fold layer: every base model's
probabilities for a row come from a model that did not see that row, and so do the
meta-classifier's (calibrated) probabilities. Those are the 5-fold CV figures reported
here, with the peers fitted on the very same folds:

* stack   -- ``stack_.oof_proba_`` (LightGBM meta, temperature-scaled)
* image / text / linear_text -- ``stack_.base_oof_`` (each base model alone)
* tfidf_lr      -- word TF-IDF + logistic regression on title + description
* frozen_cnn_lr -- frozen EfficientNet-Lite0 embedding + logistic regression; that is
  exactly the image base model, so its out-of-fold probabilities are reused

Coverage and precision at a target are cross-fitted: the thresholds applied to fold k
are chosen on the other folds' out-of-fold scores, never on the rows they are judged on.
This is cheaper and a little kinder than ``catalog-classifier evaluate`` (nested CV: the
base models that built the meta features also saw the other folds); reports/evaluation.json
holds the stricter nested figures.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from catalog_classifier.evaluation import TARGETS
from catalog_classifier.evaluation_oof import crossfit_accept, fill_missing, oof_probas  # one implementation for both
from catalog_classifier.models import create


def model_record(name: str, y, proba, fold, labels, stack_cfg, per_fold: bool = False) -> dict:
    from catalog_classifier.reporting import classification_metrics

    scored = int((~np.isnan(proba).any(1)).sum())
    p = fill_missing(proba)
    pred = p.argmax(1)
    met = classification_metrics(y, pred, labels)
    rec = {"model": name, "accuracy": round(met["accuracy"], 4), "macro_f1": round(met["macro_f1"], 4)}
    folds = []
    for t in TARGETS:
        acc = crossfit_accept(y, p, fold, t, stack_cfg)
        key = f"{int(round(t * 100)):03d}"
        rec[f"coverage_at_{key}"] = round(float(acc.mean()), 4)
        rec[f"precision_at_{key}"] = round(float((pred[acc] == y[acc]).mean()), 4) if acc.any() else None
        for k in np.unique(fold):
            m = acc & (fold == k)
            folds.append({"fold": int(k), "target": t, "coverage": round(float(m.sum() / (fold == k).sum()), 4),
                          "precision": round(float((pred[m] == y[m]).mean()), 4) if m.any() else None})
    rec.update(n_items=int(len(y)), n_categories=len(labels), n_scored=scored)
    if per_fold:
        rec["per_fold"] = folds
    return rec


def _config(spec: dict):
    from catalog_classifier.config import load_config

    cfg = load_config(spec["config"])
    sections = {k: dict(v) for k, v in spec.get("overrides", {}).items()}
    sections.setdefault("catalog", {})["label_depth"] = spec["level"]
    return cfg.with_overrides(**sections)


def run(spec: dict) -> dict:
    """Worker task: fit, save (optional), then score stack, bases and peers out of fold."""
    import torch

    from catalog_classifier import events
    from catalog_classifier.catalog import read_catalog
    from catalog_classifier.classifier import CatalogClassifier

    from .machine import cpu_seconds, peak_rss_mb
    from .stages import ExclusiveTimes, phase_key

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    cfg = _config(spec)
    t_read = time.perf_counter()
    cat = read_catalog(spec["path"], cfg.catalog)
    items = cat.items
    if spec.get("subsample") and len(items) > spec["subsample"]:
        items = items.sample(spec["subsample"], random_state=cfg.stack.seed).sort_index().reset_index(drop=True)
    read_s = time.perf_counter() - t_read

    phases = ExclusiveTimes(phase_key)
    t0, c0 = time.perf_counter(), cpu_seconds()
    with events.listening(phases):
        clf = CatalogClassifier(cfg).fit(items, image_root=cat.image_root, progress=False)
    if spec.get("model_out"):
        t_save = time.perf_counter()
        clf.save(Path(spec["model_out"]))
        phases.totals["save"] = time.perf_counter() - t_save
    fit_s = time.perf_counter() - t0
    training = {"catalog": spec["catalog"], "level": spec["level"], "items": int(len(items)),
                "wall_s": round(fit_s, 1), "cpu_s": round(cpu_seconds() - c0, 1),
                "peak_rss_mb": peak_rss_mb(), "read_s": round(read_s, 1),
                "embeddings_computed": int(getattr(clf, "last_embedding_stats_", {}).get("computed", 0)),
                "phases_s": {k: round(v, 2) for k, v in phases.totals.items()}}

    st = clf.stack_
    y, fold, labels = st.y_, st.fold_, clf.labels_
    seconds = {}
    t = time.perf_counter()
    proba = oof_probas(clf, items, cfg)  # almost all of this is the TF-IDF peer's K fits
    seconds["tfidf_lr"] = round(time.perf_counter() - t, 1)
    if "image_head" in st.base_oof_:
        proba["frozen_cnn_lr"] = st.base_oof_["image_head"]

    records = []
    for name, p in proba.items():
        rec = {"catalog": spec["catalog"], "level": spec["level"],
               **model_record(name, y, p, fold, labels, cfg.stack, per_fold=name == "stack")}
        rec["cv"] = f"{len(np.unique(fold))}-fold out-of-fold, thresholds cross-fitted"
        if name == "frozen_cnn_lr":
            rec["note"] = "the image base model (frozen EfficientNet-Lite0 + logistic regression) as a peer"
        if name in seconds:
            rec["cv_seconds"] = seconds[name]
        records.append(rec)
    return {"records": records, "training": training,
            "settings": {"n_folds": cfg.stack.n_folds, "text_epochs": create("char_cnn", cfg).epochs,
                         "num_boost_round": cfg.stack.num_boost_round, "learning_rate": cfg.stack.learning_rate,
                         "base_models": list(clf.base_names), "subsample": spec.get("subsample")},
            "seconds": round(time.perf_counter() - t_read, 1)}
