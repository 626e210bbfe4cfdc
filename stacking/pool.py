"""Logarithmic opinion pool of the base models: the meta-classifier's starting point.

A boosted meta-classifier that starts from zero must re-learn from a few hundred rows what
the best base model already knows, and on small catalogs it ends up *below* that model.
Starting LightGBM from a weighted sum of the base models' log-probabilities (its
``init_score``) means boosting only adds corrections (brand, price, tokens, agreement
between modalities); with early stopping, no useful correction means no trees, so the stack
cannot fall far below its best base.

The weights (one non-negative scalar per base model, plus nothing else) are fitted by
minimising log-loss on out-of-fold probabilities. A row a model could not score (NaN, e.g.
no image) contributes a uniform distribution, i.e. nothing after the softmax.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

EPS = 1e-6
MAX_WEIGHT = 5.0


def log_proba(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    p = np.where(np.isnan(p), 1.0 / p.shape[1], p)
    return np.log(np.clip(p, EPS, 1.0))


def _stack_logs(base_proba: dict[str, np.ndarray], names: list[str], idx=slice(None)) -> np.ndarray:
    return np.stack([log_proba(np.asarray(base_proba[n])[idx]) for n in names])


class LogPool:
    """``softmax(sum_m w_m * log p_m)`` with ``w >= 0`` fitted on held-out probabilities."""

    def __init__(self, names: list[str] | None = None, weights: np.ndarray | None = None):
        self.names = list(names or [])
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)

    def fit(self, base_proba: dict[str, np.ndarray], y: np.ndarray, idx=slice(None)) -> "LogPool":
        self.names = sorted(base_proba)
        L = _stack_logs(base_proba, self.names, idx)
        yy = np.asarray(y)[idx]
        rows = np.arange(len(yy))

        def nll(w):
            lp = log_softmax(np.tensordot(w, L, 1), axis=1)
            return float(-lp[rows, yy].mean())

        w0 = np.full(len(self.names), 1.0 / max(len(self.names), 1))
        res = minimize(nll, w0, method="L-BFGS-B", bounds=[(0.0, MAX_WEIGHT)] * len(self.names))
        self.weights = np.asarray(res.x, dtype=np.float64)
        return self

    def scores(self, base_proba: dict[str, np.ndarray], idx=slice(None)) -> np.ndarray:
        """Pooled logits [n, C] (un-normalised log-probabilities)."""
        return np.tensordot(self.weights, _stack_logs(base_proba, self.names, idx), 1)

    def to_dict(self) -> dict:
        return {"names": self.names, "weights": [float(w) for w in self.weights]}

    @classmethod
    def from_dict(cls, d: dict | None) -> "LogPool | None":
        return None if not d else cls(d["names"], d["weights"])
