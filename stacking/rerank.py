"""Top-K candidate re-ranker: the meta-classifier for taxonomies with many classes.

A multiclass LightGBM grows one tree per class per round, so its cost is rows x classes x
rounds. Here the log-opinion pool of the base models (stacking/pool.py) proposes the K most
likely classes of each item, and one *binary* LightGBM scores every (item, candidate) pair:
"is this candidate the true class". Its features describe the candidate, not the class
space: each base model's probability of it, its rank and its gap to that model's best, the
pool's log-probability, rank and margin, the candidate's prior frequency and id, plus the
item's passthrough features (brand, price, domain...; title tokens optionally). Cost is
rows x K x rounds, whatever the number of classes (only building the candidate features
touches every class, once, linearly).

The item's logits are the booster's raw score per candidate (a softmax over candidates);
the other classes share the mass of one pseudo-class below the worst candidate, so the
probability matrix stays [n, C] and the stack's temperature scaling and thresholds apply
unchanged. Out-of-fold discipline is the multiclass path's: per fold, pool, prior and
booster are fitted on the other folds only (early stopping on a slice of them), then one
final fit on all rows with the median best rounds scaled up.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp
from scipy.special import log_softmax

from .folds import fold_indices
from .lgbm import lgbm_params, raw_scores, train_meta
from .meta_features import Passthrough
from .pool import LogPool

# the non-candidates together sit this far (raw-score units) below the worst candidate
NON_CANDIDATE_GAP = 3.0
_CHUNK = 2048  # rows per block when ranking candidates against all classes (bounds memory)


class CandidateReranker:
    """Binary LightGBM over (item, candidate) rows; see the module docstring."""

    def __init__(self, top_k: int = 10, learning_rate: float = 0.05, num_leaves: int = 15,
                 min_data_in_leaf: int = 10, num_boost_round: int = 400, early_stopping_rounds: int = 30,
                 seed: int = 13, num_threads: int | None = None, use_tokens: bool = False,
                 boost_from_pool: bool = True):
        self.top_k = top_k
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.num_threads = num_threads
        self.use_tokens = use_tokens
        self.boost_from_pool = boost_from_pool

    @classmethod
    def from_params(cls, p, num_threads: int | None = None) -> "CandidateReranker":
        """From a ``StackParams`` (the stack's one config)."""
        return cls(p.rerank_top_k, p.learning_rate, p.num_leaves, p.min_data_in_leaf, p.num_boost_round,
                   p.early_stopping_rounds, p.seed, num_threads, p.rerank_tokens, p.boost_from_pool)

    def _params(self) -> dict:
        params = lgbm_params(2, self.learning_rate, self.num_leaves, self.min_data_in_leaf, self.seed,
                             self.num_threads)
        params.pop("num_class")
        params["objective"] = "binary"
        return params

    # ------------------------------------------------------------ features
    def _candidates(self, pool: LogPool, base: dict, idx) -> tuple[np.ndarray, np.ndarray]:
        """(candidate classes [n, K] best first, pool log-probabilities of all classes [n, C])."""
        lp = log_softmax(pool.scores(base, idx), axis=1)
        k = min(self.top_k, lp.shape[1])
        cand = np.argpartition(-lp, k - 1, axis=1)[:, :k] if k < lp.shape[1] else np.tile(np.arange(k), (len(lp), 1))
        order = np.argsort(-np.take_along_axis(lp, cand, 1), axis=1, kind="stable")
        return np.take_along_axis(cand, order, 1), lp

    def _features(self, base: dict, passthrough: Passthrough | None, idx, pool: LogPool,
                  log_prior: np.ndarray) -> tuple[sp.csr_matrix | np.ndarray, np.ndarray, np.ndarray]:
        """(feature rows [n*K, d], candidates [n, K], pool logit-odds of each candidate [n, K])."""
        cand, lp = self._candidates(pool, base, idx)
        n, k = cand.shape
        cols = []
        for name in sorted(base):
            p = np.asarray(base[name][idx], dtype=np.float32)
            pc = np.take_along_axis(p, cand, 1)
            rank = np.empty((n, k), dtype=np.float32)
            for s in range(0, n, _CHUNK):  # rank = classes this model scores above the candidate
                rank[s:s + _CHUNK] = (p[s:s + _CHUNK, None, :] > pc[s:s + _CHUNK, :, None]).sum(2)
            rank[np.isnan(p).any(1)] = np.nan
            cols += [pc, rank, np.max(np.nan_to_num(p, nan=0.0), 1, keepdims=True) - pc]
        lpc = np.take_along_axis(lp, cand, 1)
        cols += [lpc, np.broadcast_to(np.arange(k, dtype=np.float32), (n, k)), lpc[:, :1] - lpc,
                 log_prior[cand], cand.astype(np.float32)]
        dense = np.stack([np.broadcast_to(c, (n, k)) for c in cols], axis=2).reshape(n * k, len(cols))
        mats = [dense.astype(np.float32)]
        if passthrough is not None and passthrough.dense is not None and passthrough.dense.shape[1]:
            mats.append(np.repeat(np.asarray(passthrough.dense, dtype=np.float32), k, axis=0))
        X = np.hstack(mats)
        if self.use_tokens and passthrough is not None and passthrough.sparse is not None:
            X = sp.hstack([sp.csr_matrix(X), passthrough.sparse.tocsr()[np.repeat(np.arange(n), k)]], format="csr")
        q = np.clip(np.exp(lpc), 1e-6, 1 - 1e-6)
        return X, cand, np.log(q) - np.log1p(-q)

    def _names(self, base_names: list[str], passthrough: Passthrough | None) -> tuple[list[str], list[int]]:
        names = [f"{m}:{f}" for m in sorted(base_names) for f in ("p", "rank", "gap")]
        names += ["pool:logp", "pool:rank", "pool:margin", "cand:log_prior", "cand:class"]
        cats = [len(names) - 1]
        if passthrough is not None and passthrough.dense is not None and passthrough.dense.shape[1]:
            cats += [len(names) + c for c in passthrough.categorical]
            names += list(passthrough.dense_names)
        if self.use_tokens and passthrough is not None and passthrough.sparse is not None:
            names += list(passthrough.sparse_names)
        return names, cats

    @staticmethod
    def _log_prior(y: np.ndarray, n_classes: int) -> np.ndarray:
        return np.log((np.bincount(y, minlength=n_classes) + 1.0) / (len(y) + n_classes)).astype(np.float32)

    def _logits(self, scores: np.ndarray, cand: np.ndarray, n_classes: int) -> np.ndarray:
        """Candidate scores [n, K] -> logits [n, C]; the non-candidates share one pseudo-class."""
        n, k = cand.shape
        rest = scores.min(1) - NON_CANDIDATE_GAP - (np.log(n_classes - k) if n_classes > k else 0.0)
        out = np.repeat(rest[:, None], n_classes, axis=1)
        np.put_along_axis(out, cand, scores, 1)
        return out

    # ----------------------------------------------------------------- fit
    def _train(self, base, y, passthrough, fit_idx, rounds, val_idx=None):
        pool = LogPool().fit(base, y, fit_idx)
        prior = self._log_prior(y[fit_idx], self.n_classes_)
        X, cand, init = self._features(base, _take(passthrough, fit_idx), fit_idx, pool, prior)
        lab = (cand == y[fit_idx, None]).ravel().astype(np.float64)
        valid = {}
        if val_idx is not None:
            Xv, cv, iv = self._features(base, _take(passthrough, val_idx), val_idx, pool, prior)
            valid = dict(X_valid=Xv, y_valid=(cv == y[val_idx, None]).ravel().astype(np.float64),
                         early_stopping_rounds=self.early_stopping_rounds,
                         init_valid=iv.ravel() if self.boost_from_pool else None)
        booster = train_meta(X, lab, self.feature_names_, self.categorical_, self._params(), rounds,
                             init=init.ravel() if self.boost_from_pool else None, **valid)
        return pool, prior, booster

    def _score(self, booster, pool, prior, base, passthrough, idx, num_iteration=None):
        X, cand, init = self._features(base, passthrough, idx, pool, prior)
        s = raw_scores(booster, X, num_iteration).reshape(cand.shape)
        if self.boost_from_pool:
            s = s + init
        return s, cand

    def fit_oof(self, base_oof: dict[str, np.ndarray], y: np.ndarray, fold: np.ndarray,
                passthrough: Passthrough | None, split: Callable, progress: Callable[[str], None] = print
                ) -> np.ndarray:
        """Out-of-fold logits [n, C] (each fold scored by pool, prior and booster fitted on the
        other folds; ``split(train_idx, y, seed)`` -> (fit_idx, val_idx) for early stopping),
        then the final fit on all rows."""
        if int(self.top_k) < 1:
            raise ValueError(f"stack.rerank_top_k must be at least 1, got {self.top_k}")
        y = np.asarray(y, dtype=np.int64)
        self.n_classes_ = next(iter(base_oof.values())).shape[1]
        self.feature_names_, self.categorical_ = self._names(list(base_oof), passthrough)
        oof = np.zeros((len(y), self.n_classes_))
        best, hits = [], 0
        for i, k in enumerate(np.unique(fold)):
            progress(f"meta: re-ranker, fold {k} (top {self.top_k} of {self.n_classes_} classes)")
            train_idx, test_idx = fold_indices(fold, k)
            fit_idx, val_idx = split(train_idx, y, self.seed + i)
            pool, prior, booster = self._train(base_oof, y, passthrough, fit_idx, self.num_boost_round, val_idx)
            best.append(max(booster.best_iteration, 1))
            s, cand = self._score(booster, pool, prior, base_oof, _take(passthrough, test_idx), test_idx,
                                  booster.best_iteration or None)
            oof[test_idx] = self._logits(s, cand, self.n_classes_)
            hits += int((cand == y[test_idx, None]).any(1).sum())
        self.oof_recall_ = hits / len(y)  # share of rows whose true class was a candidate
        self.num_rounds_ = min(int(np.ceil(np.median(best) * 1.2)), self.num_boost_round)
        progress(f"meta: re-ranker final fit, {self.num_rounds_} rounds "
                 f"(true class among the out-of-fold candidates: {self.oof_recall_:.3f})")
        all_idx = np.arange(len(y))
        self.pool_, self.log_prior_, self.booster_ = self._train(base_oof, y, passthrough, all_idx,
                                                                 self.num_rounds_)
        return oof

    # ------------------------------------------------------------- predict
    def logits(self, base: dict[str, np.ndarray], passthrough: Passthrough | None = None) -> np.ndarray:
        s, cand = self._score(self.booster_, self.pool_, self.log_prior_, base, passthrough, slice(None))
        return self._logits(s, cand, self.n_classes_)

    def contributions(self, base: dict[str, np.ndarray], passthrough: Passthrough | None = None
                      ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """LightGBM ``pred_contrib`` of each item's best-scored candidate row: [n, d + 1]
        (the last column is the bias), the feature names, and the pool's starting score of
        that candidate ([n]; 0 when the trees do not start from the pool). Raw-score units."""
        X, cand, init = self._features(base, passthrough, slice(None), self.pool_, self.log_prior_)
        init = init if self.boost_from_pool else np.zeros(cand.shape)
        s = raw_scores(self.booster_, X).reshape(cand.shape) + init
        best = s.argmax(1)
        rows = np.arange(len(cand)) * cand.shape[1] + best
        contrib = np.asarray(self.booster_.predict(X[rows], pred_contrib=True))
        return contrib, self.feature_names_ + ["bias"], init[np.arange(len(cand)), best]

    # ----------------------------------------------------------- save/load
    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(path / "rerank_lgbm.txt"))
        np.save(path / "log_prior.npy", self.log_prior_)
        state = {"params": {k: getattr(self, k) for k in _PARAMS}, "n_classes": self.n_classes_,
                 "feature_names": self.feature_names_, "categorical": self.categorical_,
                 "num_rounds": self.num_rounds_, "oof_recall": self.oof_recall_, "pool": self.pool_.to_dict()}
        (path / "rerank.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "CandidateReranker":
        path = Path(path)
        state = json.loads((path / "rerank.json").read_text())
        self = cls(**state["params"])
        self.n_classes_, self.num_rounds_ = state["n_classes"], state["num_rounds"]
        self.feature_names_, self.categorical_ = state["feature_names"], state["categorical"]
        self.oof_recall_ = state["oof_recall"]
        self.pool_ = LogPool.from_dict(state["pool"])
        self.log_prior_ = np.load(path / "log_prior.npy")
        self.booster_ = lgb.Booster(model_file=str(path / "rerank_lgbm.txt"))
        return self


_PARAMS = ("top_k", "learning_rate", "num_leaves", "min_data_in_leaf", "num_boost_round",
           "early_stopping_rounds", "seed", "num_threads", "use_tokens", "boost_from_pool")


def _take(passthrough: Passthrough | None, idx) -> Passthrough | None:
    return None if passthrough is None else passthrough.take(idx)
