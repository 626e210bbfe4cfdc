"""Softmax head over cached image embeddings (frozen EfficientNet-Lite0 features).

Items without a usable image get NaN probabilities: the meta-classifier treats them as
missing instead of reading a made-up guess.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ._io import align_proba, load_sklearn, save_sklearn
from .registry import register


class ImageHead:
    def __init__(self, C: float = 1.0, seed: int = 0):
        self.C, self.seed = C, seed

    def fit(self, X, y, n_classes: int):
        self.n_classes_ = n_classes
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
        out = np.full((len(X), self.n_classes_), np.nan, dtype=np.float32)
        if self.model_ is None or X.embeddings is None:
            return out
        ok = ~np.isnan(X.embeddings).any(1)
        if ok.any():
            p = self.model_.predict_proba(X.embeddings[ok])
            out[ok] = align_proba(p, self.model_.classes_, self.n_classes_)
        return out

    def save(self, path):
        save_sklearn(self.model_, {"n_classes": self.n_classes_, "C": self.C}, Path(path))

    @classmethod
    def load(cls, path):
        model, meta = load_sklearn(Path(path))
        self = cls(meta["C"])
        self.model_, self.n_classes_ = model, meta["n_classes"]
        return self


@register("image_head")
def _build(config):
    return lambda: ImageHead(C=config.image.head_c, seed=config.stack.seed)
