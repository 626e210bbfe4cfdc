"""Linear text model: TF-IDF over character n-grams and words, logistic regression.

Cheap, strong on spec-list text, and a different inductive bias from the char-CNN, so the
stack gains from having both."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from ._io import align_proba, load_sklearn, save_sklearn
from .base import BaseModel
from .registry import register


@register("linear_text")
class LinearText(BaseModel):
    def __init__(self, C: float = 10.0, max_features: int = 200_000, seed: int = 0, classes=None):
        self.C = C
        self.max_features = max_features
        self.seed = seed
        self.classes = classes

    def _vectorizers(self):
        return (
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True,
                            max_features=self.max_features, dtype=np.float32),
            TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1, sublinear_tf=True,
                            token_pattern=r"(?u)\b\w+\b", max_features=self.max_features,
                            dtype=np.float32),
        )

    def _features(self, texts, fit: bool):
        texts = [str(t) for t in texts]
        if fit:
            self.vecs_ = self._vectorizers()
            return sp.hstack([v.fit_transform(texts) for v in self.vecs_], format="csr")
        return sp.hstack([v.transform(texts) for v in self.vecs_], format="csr")

    def fit(self, X, y):
        y = self._encode_labels(y)
        F = self._features(X.texts, fit=True)
        self.model_ = LogisticRegression(C=self.C, max_iter=1000, random_state=self.seed)
        self.model_.fit(F, y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        p = self.model_.predict_proba(self._features(X.texts, fit=False))
        return align_proba(p, self.model_.classes_, len(self.classes_))

    def _save_fitted(self, path):
        save_sklearn((self.classes_, self.vecs_, self.model_), path)

    def _load_fitted(self, path):
        self.classes_, self.vecs_, self.model_ = load_sklearn(path)
