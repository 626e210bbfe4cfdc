"""Fold assignment for honest out-of-fold predictions.

Folds are stratified by class and grouped, so that duplicate items (same normalised
title or same image) never sit on both sides of a fold.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold


def make_folds(y: np.ndarray, n_folds: int, seed: int = 0, groups: np.ndarray | None = None) -> np.ndarray:
    """Return an int array of fold ids (0..n_folds-1), one per row."""
    y = np.asarray(y)
    n = len(y)
    if n_folds < 2:
        raise ValueError("n_folds must be at least 2")
    if n < n_folds:
        raise ValueError(f"cannot make {n_folds} folds from {n} rows")
    fold = np.full(n, -1, dtype=np.int64)
    with warnings.catch_warnings():
        # classes smaller than n_folds are allowed: they simply miss some folds
        warnings.simplefilter("ignore", UserWarning)
        if groups is None:
            splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            splits = splitter.split(np.zeros(n), y)
        else:
            splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            splits = splitter.split(np.zeros(n), y, groups)
        for k, (_, test_idx) in enumerate(splits):
            fold[test_idx] = k
    assert (fold >= 0).all()
    return fold


def fold_indices(fold: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) for fold k."""
    test = np.flatnonzero(fold == k)
    train = np.flatnonzero(fold != k)
    return train, test
