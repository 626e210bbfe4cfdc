"""Out-of-fold base-model predictions: every row's probabilities come from a model that
never saw that row's label."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .folds import fold_indices
from .subset import n_rows, take

Factory = Callable[[], Any]


def out_of_fold_proba(
    factory: Factory,
    X,
    y: np.ndarray,
    fold: np.ndarray,
    n_classes: int,
    on_fold: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Fit a fresh estimator per fold and predict the held-out rows.

    The estimator's ``predict_proba`` may return NaN rows (e.g. an image model on items
    without an image); they are kept as NaN so the meta-classifier sees "missing".
    """
    n = n_rows(X)
    out = np.full((n, n_classes), np.nan, dtype=np.float32)
    for k in np.unique(fold):
        train_idx, test_idx = fold_indices(fold, k)
        est = factory()
        est.fit(take(X, train_idx), y[train_idx], n_classes=n_classes)
        out[test_idx] = est.predict_proba(take(X, test_idx))
        if on_fold is not None:
            on_fold(int(k))
    return out
