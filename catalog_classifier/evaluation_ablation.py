"""Ablations: what each base model adds to the stack, on the same folds.

``stack_without_<base>`` is the stack with its meta layer (LightGBM, pool, calibration,
thresholds) re-fitted without that base model, reusing the out-of-fold base predictions
already computed (``StackedClassifier.without``): the base models are not retrained, so an
ablation costs a meta fit, not a stack fit. Both protocols:

* nested (``evaluation.cross_validate``): per outer fold, the fold model's stack without the
  base predicts the held-out rows; thresholds come from that stack's inner out-of-fold scores;
* oof (``evaluation_oof``): the ablated stack's own out-of-fold meta scores, routed with
  cross-fitted thresholds.

Routing is the model's alone (no rules), so ``coverage_at_*`` of an ablation compares with the
stack's ``model_only_coverage_at_*`` (nested) or ``coverage_at_*`` (oof, which has no rules).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from stacking import route
from stacking.thresholds import select_for

from . import ancestors as anc
from .classifier import CatalogClassifier
from .report_table import ABLATION_PREFIX as PREFIX
from .reporting import classification_metrics


def ablation_name(base: str) -> str:
    return f"{PREFIX}{base}"


def _ablated_stacks(clf: CatalogClassifier, items_train: pd.DataFrame, image_root: str | None,
                    embeddings_train: np.ndarray | None):
    """(base, stack without it, ancestor stacks without it) for each base model of a fitted
    classifier (none for a single-model stack); the stack's out-of-fold scores are refined by
    its ancestors', as ``fit`` refines them. ``items_train``: exactly the rows ``fit`` trained
    on, in its order."""
    st = clf.stack_
    if len(st.base_models_) < 2:
        return
    pt = clf.passthrough(items_train.reset_index(drop=True), image_root, embeddings_train)
    for base in st.base_models_:
        leaf, ancestors = st.without([base], pt), anc.without(clf.ancestors_, base, pt)
        anc.refine_oof(leaf, ancestors)
        yield base, leaf, ancestors


def fold_ablations(clf: CatalogClassifier, items_train: pd.DataFrame, items_test: pd.DataFrame,
                   base_test: dict[str, np.ndarray], targets, image_root: str | None = None,
                   embeddings_train: np.ndarray | None = None, embeddings_test: np.ndarray | None = None
                   ) -> dict[str, tuple[np.ndarray, dict[float, np.ndarray]]]:
    """Nested CV, one outer fold: name -> (held-out probabilities in the fold model's classes,
    target -> model-only accept mask). ``base_test``: the fold model's base probabilities of the
    held-out rows (from ``clf.predict_proba``), reused rather than predicted again."""
    pt_test = clf.passthrough(items_test.reset_index(drop=True), image_root, embeddings_test)
    anc_base = []  # the ancestor stacks' base probabilities of the held-out rows: once, not per ablation
    if clf.ancestors_:
        X_test, _ = clf.inputs(items_test.reset_index(drop=True), image_root, embeddings=embeddings_test)
        anc_base = [a.stack.base_proba(X_test) for a in clf.ancestors_]
    s = clf.config.stack
    out = {}
    for base, st, ancestors in _ablated_stacks(clf, items_train, image_root, embeddings_train):
        p = st.predict_proba(None, pt_test, base_proba={n: b for n, b in base_test.items() if n != base})
        p = anc.refine(p, ancestors, anc.ancestor_proba(
            ancestors, None, pt_test, [{n: b for n, b in ab.items() if n != base} for ab in anc_base]))
        acc = {t: route(p, select_for(s, st.y_, st.oof_proba_, t))[2] for t in targets}
        out[ablation_name(base)] = (p, acc)
    return out


def oof_ablations(clf: CatalogClassifier, items_train: pd.DataFrame, image_root: str | None = None,
                  embeddings_train: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Out-of-fold protocol: name -> the ablated stack's own out-of-fold probabilities (rows in
    ``clf.stack_.y_`` order)."""
    return {ablation_name(base): st.oof_proba_
            for base, st, _ in _ablated_stacks(clf, items_train, image_root, embeddings_train)}


def ablation_records(base: dict, y: np.ndarray, labels: list[str], proba: dict[str, np.ndarray],
                     accepted: dict[str, dict[float, np.ndarray]], stack_macro_f1: float) -> list[dict]:
    """One record per ablation: ``base`` carries the shared fields (catalog, level, n_items, cv)."""
    out = []
    for name, p in proba.items():
        pred = p.argmax(1)
        met = classification_metrics(y, pred, labels)
        rec = {**base, "model": name, "accuracy": met["accuracy"], "macro_f1": met["macro_f1"],
               "delta_macro_f1": met["macro_f1"] - stack_macro_f1, "routing": "model only"}
        for t, acc in accepted[name].items():
            key = f"{int(round(t * 100)):03d}"
            rec[f"coverage_at_{key}"] = float(acc.mean())
            rec[f"precision_at_{key}"] = float((pred[acc] == y[acc]).mean()) if acc.any() else None
        rec["per_category"] = met["per_category"]
        out.append(rec)
    return out
