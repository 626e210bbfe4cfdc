"""Linear text model: TF-IDF over character n-grams and words, logistic regression.

Cheap, strong on spec-list text, and a different inductive bias from the char-CNN, so the
stack gains from having both.

Inference computes the char n-gram counts per distinct word (``_char_wb_counts``): the
analyzer's n-grams never cross a word boundary, so a word's vocabulary ids are looked up
once and reused for every later occurrence. The word counts (``_word_counts``) look the row's
tokens and token n-grams up directly and sum duplicates in one sparse pass instead of a dict
per row. Both matrices equal ``TfidfVectorizer.transform``'s exactly (tests/test_warm_path.py);
the fitted vectorizers are untouched.

From ``ovr_from`` classes on, the logistic regression is one binary liblinear problem per class
(dual coordinate descent; probabilities normalised over classes) instead of one multinomial
lbfgs problem: lbfgs keeps about 25 float64 copies of the features x classes weights, which at
BigBasket's 415 types was 10 GB and most of a fit's time. On one BigBasket type fold the binary
problems took 0.59x the CPU time and 0.11x the peak memory at +0.005 accuracy and +0.004
macro-F1, on a sub-category fold (96 classes) 0.61x the CPU at +0.006 / +0.010; on the
benchmark's relabelled leaves (no meaning, hard binary problems) 0.30x the CPU of lbfgs, where
liblinear's primal solver took 1.4x (``reports/linear_text_ovr.json``). Below 50 classes (every
Flipkart level, BigBasket's 11 categories) nothing was measured, so the multinomial fit stays.
"""
from __future__ import annotations

from itertools import chain

import numpy as np
import scipy.sparse as sp
from sklearn import config_context
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from ._io import align_proba, load_sklearn, save_sklearn
from .base import BaseModel
from .registry import register


@register("linear_text")
class LinearText(BaseModel):

    reads = ("texts",)

    def __init__(self, C: float = 10.0, max_features: int = 200_000, ovr_from: int = 50, seed: int = 0,
                 classes=None):
        self.C = C
        self.max_features = max_features
        self.ovr_from = ovr_from  # from this many classes on, one-vs-rest
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
        if vec.binary or vec.analyzer not in ("char_wb", "word") or vec.stop_words is not None:
            return vec.transform(texts)
        if vec.analyzer == "word":
            return vec._tfidf.transform(_word_counts(vec, texts), copy=False)
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
        if len(self.classes_) >= self.ovr_from:  # the declared classes: every fold of a stack fits alike
            self.model_ = OneVsRestClassifier(
                LogisticRegression(C=self.C, solver="liblinear", dual=True, random_state=self.seed))
        else:
            self.model_ = LogisticRegression(C=self.C, max_iter=1000, random_state=self.seed)
        self.model_.fit(F, y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        # TF-IDF of counts is finite by construction: sklearn's NaN/inf scans of it are skipped
        with config_context(assume_finite=True):
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
        uniq, n = _distinct_counts(np.concatenate(parts) if parts else empty)
        indices.append(uniq)
        counts.append(n)
        indptr.append(indptr[-1] + len(uniq))
    X = sp.csr_array((np.concatenate(counts).astype(vec.dtype) if counts else np.zeros(0, vec.dtype),
                      np.concatenate(indices) if indices else empty, np.asarray(indptr, np.int32)),
                     shape=(len(texts), len(vocab)), dtype=vec.dtype)
    X.sort_indices()
    return X


def _distinct_counts(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(ids, return_counts=True)`` (sorted distinct ids, their counts) without its
    general-purpose overhead: one sort, the positions where the value changes."""
    s = np.sort(ids)
    first = np.empty(len(s), dtype=bool)
    first[:1] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return s[starts], np.diff(np.append(starts, len(s)))


def _word_counts(vec: TfidfVectorizer, texts: list[str]) -> sp.csr_array:
    """The count matrix CountVectorizer.transform builds for a fitted ``word`` vectorizer without
    stop words: its own decode, preprocessor and tokenizer, then the tokens and the space-joined
    token n-grams (``ngram_range``) that are in the vocabulary, duplicates summed."""
    tokenize, preprocess, vocab = vec.build_tokenizer(), vec.build_preprocessor(), vec.vocabulary_.get
    lo, hi = vec.ngram_range
    join = " ".join
    rows = []
    for doc in texts:
        tokens = tokenize(preprocess(vec.decode(doc)))
        ids = list(map(vocab, tokens)) if lo == 1 else []
        for n in range(max(lo, 2), hi + 1):
            ids += map(vocab, map(join, zip(*(tokens[k:] for k in range(n)))))
        rows.append([i for i in ids if i is not None])
    indptr = np.zeros(len(rows) + 1, np.int32)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = np.fromiter(chain.from_iterable(rows), np.int32, int(indptr[-1]))
    X = sp.csr_array((np.ones(len(indices), vec.dtype), indices, indptr), shape=(len(rows), len(vec.vocabulary_)))
    X.sum_duplicates()  # sorted indices, one entry per term with its count
    return X
