"""Out-of-fold base-model predictions: every row's probabilities come from a model that
never saw that row's label (scikit-learn's ``cross_val_predict`` over our folds)."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import cross_val_predict

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


def out_of_fold_proba(estimator: Any, X, y: np.ndarray, fold: np.ndarray, n_classes: int) -> np.ndarray:
    """A clone of ``estimator`` per fold predicts the held-out rows (``y`` in 0..n_classes-1).

    The estimator's ``predict_proba`` may return NaN rows (e.g. an image model on items
    without an image); they are kept as NaN so the meta-classifier sees "missing".
    """
    y = np.asarray(y)
    present = np.unique(y)
    cv = [fold_indices(fold, k) for k in np.unique(fold)]
    p = cross_val_predict(_for_labels(estimator, present), X, np.searchsorted(present, y), cv=cv,
                          method="predict_proba")
    return _widen(p, present, n_classes)


def fit_clone(estimator: Any, X, y: np.ndarray, n_classes: int):
    """A clone fitted on all rows whose ``predict_proba`` has ``n_classes`` columns."""
    y = np.asarray(y)
    present = np.unique(y)
    if len(present) != n_classes:
        raise ValueError(f"the final base models need every one of the {n_classes} classes in y")
    return _for_labels(estimator, present).fit(X, np.searchsorted(present, y))
