"""Simple peers a user would pick instead of our stack (evaluation and benchmark only)."""
from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from ._io import align_proba
from .base import BaseModel


class TfidfLR(BaseModel):
    """Word TF-IDF (1-2 grams) over title + description, logistic regression."""

    def __init__(self, C: float = 10.0, seed: int = 0, classes=None):
        self.C = C
        self.seed = seed
        self.classes = classes

    def fit(self, X, y):
        y = self._encode_labels(y)
        self.vec_ = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, dtype=np.float32)
        self.lr_ = LogisticRegression(C=self.C, max_iter=1000, random_state=self.seed)
        self.lr_.fit(self.vec_.fit_transform([str(t) for t in X.texts]), y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        p = self.lr_.predict_proba(self.vec_.transform([str(t) for t in X.texts]))
        return align_proba(p, self.lr_.classes_, len(self.classes_))
