"""Linear text model: TF-IDF over character n-grams and words, logistic regression.

Cheap, strong on spec-list text, and a different inductive bias from the char-CNN, so the
stack gains from having both.

Inference computes the char n-gram counts per distinct word (``_char_wb_counts``): the
analyzer's n-grams never cross a word boundary, so a word's vocabulary ids are looked up
once and reused for every later occurrence. The matrix equals ``TfidfVectorizer.transform``'s
exactly (tests/test_warm_path.py); the fitted vectorizers are untouched.
"""
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
            self.__dict__.pop("_word_ids", None)
            return sp.hstack([v.fit_transform(texts) for v in self.vecs_], format="csr")
        return sp.hstack([self._transform(v, texts) for v in self.vecs_], format="csr")

    def _transform(self, vec: TfidfVectorizer, texts: list[str]):
        if vec.analyzer != "char_wb" or vec.binary:
            return vec.transform(texts)
        cache = self.__dict__.setdefault("_word_ids", {})
        if len(cache) > _WORD_CACHE:
            cache.clear()
        return vec._tfidf.transform(_char_wb_counts(vec, texts, cache), copy=False)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_word_ids", None)  # a per-process lookup cache, rebuilt on use
        return state

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


_WORD_CACHE = 200_000  # distinct words kept between calls (a few tens of MB at most)


def _char_wb_counts(vec: TfidfVectorizer, texts: list[str], cache: dict) -> sp.csr_array:
    """The count matrix CountVectorizer.transform builds for a fitted ``char_wb`` vectorizer.

    Same steps as its analyzer (decode, preprocess, collapse whitespace, split into words),
    then each word's in-vocabulary n-gram ids from ``cache`` (computed by the vectorizer's own
    ``_char_wb_ngrams`` on first sight).
    """
    vocab, preprocess = vec.vocabulary_, vec.build_preprocessor()
    empty = np.zeros(0, np.int32)
    indptr, indices, counts = [0], [], []
    for doc in texts:
        words = vec._white_spaces.sub(" ", preprocess(vec.decode(doc))).split()
        parts = []
        for w in words:
            ids = cache.get(w)
            if ids is None:
                ids = np.fromiter((vocab[g] for g in vec._char_wb_ngrams(w) if g in vocab), np.int32)
                cache[w] = ids if len(ids) else empty
            parts.append(ids)
        uniq, n = np.unique(np.concatenate(parts) if parts else empty, return_counts=True)
        indices.append(uniq)
        counts.append(n)
        indptr.append(indptr[-1] + len(uniq))
    X = sp.csr_array((np.concatenate(counts).astype(vec.dtype) if counts else np.zeros(0, vec.dtype),
                      np.concatenate(indices) if indices else empty, np.asarray(indptr, np.int32)),
                     shape=(len(texts), len(vocab)), dtype=vec.dtype)
    X.sort_indices()
    return X
