"""Out-of-fold base-model predictions: every row's probabilities come from a model that
never saw that row's label (``cross_val_predict`` over our folds, with progress per fold)."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from sklearn.base import clone
from sklearn.utils import _safe_indexing

from .folds import fold_indices


def _for_labels(estimator, present: np.ndarray):
    """A clone told the label set it must predict (when it takes a ``classes`` parameter),
    so a fold missing a class still returns that class's column."""
    est = clone(estimator)
    if "classes" in est.get_params(deep=False):
        est.set_params(classes=list(range(len(present))))
    return est


def _widen(p: np.ndarray, present: np.ndarray, n_classes: int) -> np.ndarray:
    """Columns of the labels present in ``y`` -> columns 0..n_classes-1 (absent labels: 0)."""
    if len(present) == n_classes:
        return np.asarray(p, dtype=np.float32)
    out = np.zeros((p.shape[0], n_classes), dtype=np.float32)
    out[:, present] = p
    return out


def out_of_fold_proba(estimator: Any, X, y: np.ndarray, fold: np.ndarray, n_classes: int,
                      progress: Callable[[str], None] | None = None) -> np.ndarray:
    """A clone of ``estimator`` per fold predicts the held-out rows (``y`` in 0..n_classes-1).

    The estimator's ``predict_proba`` may return NaN rows (e.g. an image model on items
    without an image); they are kept as NaN so the meta-classifier sees "missing".
    ``progress`` hears each fold as it ends (a base model's folds can take many minutes).
    """
    y = np.asarray(y)
    present = np.unique(y)
    y_enc = np.searchsorted(present, y)
    folds = np.unique(fold)
    out = None
    for i, k in enumerate(folds):
        t0 = time.perf_counter()
        train_idx, test_idx = fold_indices(fold, k)
        est = _for_labels(estimator, present).fit(_safe_indexing(X, train_idx), y_enc[train_idx])
        p = np.asarray(est.predict_proba(_safe_indexing(X, test_idx)), dtype=np.float64)
        if p.shape[1] != len(present):  # an estimator without ``classes``: its own label set
            full = np.zeros((len(test_idx), len(present)))
            full[:, np.asarray(est.classes_, dtype=np.int64)] = p
            p = full
        if out is None:
            out = np.zeros((len(y), len(present)))
        out[test_idx] = p
        if progress is not None:
            progress(f"  fold {i + 1}/{len(folds)} in {time.perf_counter() - t0:.0f} s")
    return _widen(out, present, n_classes)


def fit_clone(estimator: Any, X, y: np.ndarray, n_classes: int):
    """A clone fitted on all rows whose ``predict_proba`` has ``n_classes`` columns."""
    y = np.asarray(y)
    present = np.unique(y)
    if len(present) != n_classes:
        raise ValueError(f"the final base models need every one of the {n_classes} classes in y")
    return _for_labels(estimator, present).fit(X, np.searchsorted(present, y))
