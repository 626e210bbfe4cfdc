"""Linear text model: TF-IDF over character n-grams and words, logistic regression.

Cheap, strong on spec-list text, and a different inductive bias from the char-CNN, so the
stack gains from having both."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from ._io import align_proba, load_sklearn, save_sklearn
from .registry import register


class LinearText:
    def __init__(self, C: float = 10.0, max_features: int = 200_000, seed: int = 0):
        self.C, self.max_features, self.seed = C, max_features, seed

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

    def fit(self, X, y, n_classes: int):
        self.n_classes_ = n_classes
        F = self._features(X.texts, fit=True)
        self.model_ = LogisticRegression(C=self.C, max_iter=1000, random_state=self.seed)
        self.model_.fit(F, y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        p = self.model_.predict_proba(self._features(X.texts, fit=False))
        return align_proba(p, self.model_.classes_, self.n_classes_)

    def save(self, path):
        save_sklearn((self.vecs_, self.model_), {"n_classes": self.n_classes_, "C": self.C}, Path(path))

    @classmethod
    def load(cls, path):
        (vecs, model), meta = load_sklearn(Path(path))
        self = cls(meta["C"])
        self.vecs_, self.model_, self.n_classes_ = vecs, model, meta["n_classes"]
        return self


@register("linear_text")
def _build(config):
    return lambda: LinearText(seed=config.stack.seed)
