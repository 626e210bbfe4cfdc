"""Row subsetting that works for numpy arrays, pandas objects, scipy sparse matrices
and any object with a ``take(idx)`` method (the product's feature containers)."""
from __future__ import annotations

import numpy as np


def take(X, idx: np.ndarray):
    if X is None:
        return None
    if hasattr(X, "take") and not isinstance(X, np.ndarray) and not hasattr(X, "iloc"):
        return X.take(idx)
    if hasattr(X, "iloc"):
        return X.iloc[idx]
    if hasattr(X, "tocsr"):
        return X.tocsr()[idx]
    return np.asarray(X)[idx]


def n_rows(X) -> int:
    if hasattr(X, "shape"):
        return int(X.shape[0])
    return len(X)
