"""Softmax head over cached image embeddings (frozen EfficientNet-Lite0 features).

Items without a usable image get NaN probabilities: the meta-classifier treats them as
missing instead of reading a made-up guess.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ._io import align_proba, load_sklearn, save_sklearn
from .base import BaseModel
from .registry import register


@register("image_head")
class ImageHead(BaseModel):
    """NaN rows: items without a usable image (or every row, when fitted without images)."""

    reads = ("embeddings",)

    def __init__(self, C: float = 1.0, seed: int = 0, classes=None):
        self.C = C
        self.seed = seed
        self.classes = classes

    def fit(self, X, y):
        y = self._encode_labels(y)
        self.model_ = None
        if X.embeddings is None:
            return self
        ok = ~np.isnan(X.embeddings).any(1)
        if ok.sum() < 2 or len(np.unique(y[ok])) < 2:
            return self
        self.model_ = make_pipeline(
            StandardScaler(), LogisticRegression(C=self.C, max_iter=300, random_state=self.seed))
        self.model_.fit(X.embeddings[ok], y[ok])
        return self

    def predict_proba(self, X) -> np.ndarray:
        out = np.full((len(X), len(self.classes_)), np.nan, dtype=np.float32)
        if self.model_ is None or X.embeddings is None:
            return out
        ok = ~np.isnan(X.embeddings).any(1)
        if ok.any():
            p = self.model_.predict_proba(X.embeddings[ok])
            out[ok] = align_proba(p, self.model_.classes_, len(self.classes_))
        return out

    def _save_fitted(self, path):
        save_sklearn((self.classes_, self.model_), path)

    def _load_fitted(self, path):
        self.classes_, self.model_ = load_sklearn(path)
