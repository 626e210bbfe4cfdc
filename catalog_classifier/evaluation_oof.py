"""The cheaper evaluation protocol: one fit, scored from its own out-of-fold layer.

``CatalogClassifier.fit`` already holds a K-fold out-of-fold layer: every base model's
probabilities for a row come from a model that never saw that row, and so do the
meta-classifier's (temperature-scaled) probabilities. Scoring those rows is K-fold CV at
the cost of one fit, instead of K+1 fits per outer fold for nested CV. It is slightly
kinder than nested CV (the base models that built a row's meta *features* saw the other
folds), so records say which protocol produced them (``"cv"``).

Coverage and precision at a target are cross-fitted: fold k is routed with thresholds
chosen on the other folds' out-of-fold scores, never on the rows they are judged on.
Used for catalogs too large for nested CV on a small machine (BigBasket: 27.5k items) and
by the benchmark.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from stacking import route
from stacking.thresholds import select_for

from .classifier import CatalogClassifier
from .config import Config
from .evaluation_hier import crossfit_store
from .evaluation import TARGETS, CVResult, _texts, fill_missing
from .evaluation_ablation import oof_ablations
from .models.peers import TfidfLR
from .models.registry import report_name

PROTOCOL = "out-of-fold layer of one fit, thresholds cross-fitted"


def crossfit_accept(y, proba, fold, target: float, params) -> np.ndarray:
    """Auto-accept mask where fold k's thresholds come from the other folds' scores only."""
    accepted = np.zeros(len(y), dtype=bool)
    for k in np.unique(fold):
        te, tr = fold == k, fold != k
        thr = select_for(params, y[tr], proba[tr], target)
        accepted[te] = route(proba[te], thr)[2]
    return accepted


def per_fold(y, proba, fold, accepted: dict[float, np.ndarray]) -> list[dict]:
    pred, out = proba.argmax(1), []
    for k in np.unique(fold):
        rec = {"fold": int(k), "n_test": int((fold == k).sum())}
        for t, acc in accepted.items():
            m = acc & (fold == k)
            key = f"{int(round(t * 100)):03d}"
            rec[f"coverage_at_{key}"] = float(m.sum() / (fold == k).sum())
            rec[f"precision_at_{key}"] = float((pred[m] == y[m]).mean()) if m.any() else None
        out.append(rec)
    return out


def oof_probas(clf: CatalogClassifier, items: pd.DataFrame, config: Config) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities of a fitted classifier's stack and base models (NaN rows kept),
    plus the TF-IDF peer fitted on the very same folds."""
    from stacking.oof import out_of_fold_proba

    st = clf.stack_
    proba = {"stack": st.oof_proba_}
    for name, p in st.base_oof_.items():
        proba[report_name(name)] = p
    keep = clf.labels_for(items).notna().to_numpy()  # the rows fit() trained on, in its order
    X_text = _texts(items.loc[keep].reset_index(drop=True), config)
    proba["tfidf_lr"] = out_of_fold_proba(TfidfLR(seed=config.stack.seed), X_text, st.y_, st.fold_,
                                          len(clf.labels_))
    return proba


def oof_cross_validate(items: pd.DataFrame, config: Config, catalog_name: str, image_root: str | None = None,
                       progress: bool = True, ablation: bool = True) -> tuple[CVResult, CatalogClassifier]:
    """Fit once; return the out-of-fold figures as a CVResult (same shape as nested CV's).
    ``ablation``: also the out-of-fold figures of the stack without each base model."""
    t0 = time.time()
    clf = CatalogClassifier(config).fit(items, image_root=image_root, progress=progress)
    keep = clf.labels_for(items).notna().to_numpy()  # the rows fit() trained on, in its order
    y, fold, labels = clf.stack_.y_, clf.stack_.fold_, list(clf.labels_)
    proba = {m: fill_missing(p) for m, p in oof_probas(clf, items, config).items()}
    s = config.stack
    accepted = {t: crossfit_accept(y, proba["stack"], fold, t, s) for t in TARGETS}
    abl = {}
    if ablation:
        abl = oof_ablations(clf, items.loc[keep], image_root)
    abl_acc = {m: {t: crossfit_accept(y, p, fold, t, s)
                   for t in TARGETS} for m, p in abl.items()}
    hier = crossfit_store(labels, y, proba["stack"], fold, TARGETS, s) if s.hierarchical else {}
    res = CVResult(catalog_name, config.catalog.label_depth, labels, y, proba, accepted, fold,
                   time.time() - t0, per_fold(y, proba["stack"], fold, accepted), PROTOCOL,
                   ablation=abl, ablation_accepted=abl_acc, hier=hier, risk_delta=s.risk_delta,
                   item_ids=items.loc[keep, "item_id"].astype(str).to_numpy())
    return res, clf
