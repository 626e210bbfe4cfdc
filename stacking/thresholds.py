"""Per-class confidence thresholds chosen to reach a target precision.

Chosen on out-of-fold (held-out) calibrated probabilities. A threshold selected on the
same scores it is judged on is optimistic, so the precision estimate can be replaced by a
one-sided Wilson lower bound (``confidence`` > 0); classes whose predictions never reach
the target with ``min_support`` accepted items get ``inf`` (everything goes to review).

A class with a hundred predictions has a jagged precision curve: one error near the top
can push its threshold far up. ``shrinkage`` = m > 0 adds m pseudo-items to every point
of a class's curve, at the precision all classes together reach above the same
confidence (empirical-Bayes shrinkage toward the global curve): small classes lean on the
global curve, large classes keep their own.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm


def wilson_lower(correct: np.ndarray, total: np.ndarray, confidence: float) -> np.ndarray:
    correct = np.asarray(correct, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    p = np.divide(correct, total, out=np.zeros_like(correct), where=total > 0)
    if confidence <= 0:
        return p
    z = norm.ppf(confidence)
    denom = 1 + z * z / total
    centre = p + z * z / (2 * total)
    margin = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return (centre - margin) / denom


def global_precision(y_true: np.ndarray, proba: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Precision of all rows (any predicted class) whose confidence is >= each value of ``at``."""
    conf = proba.max(1)
    order = np.argsort(-conf, kind="stable")
    s_conf = conf[order]
    prec = np.cumsum(proba.argmax(1)[order] == np.asarray(y_true)[order]) / np.arange(1, len(conf) + 1)
    # index of the last row with confidence >= t (s_conf is descending)
    last = np.searchsorted(-s_conf, -np.asarray(at), side="right") - 1
    return prec[np.clip(last, 0, len(prec) - 1)]


def select_thresholds(
    y_true: np.ndarray,
    proba: np.ndarray,
    target_precision: float,
    min_support: int = 10,
    confidence: float = 0.0,
    shrinkage: float = 0.0,
) -> np.ndarray:
    """Lowest threshold per predicted class whose accepted set reaches the target."""
    y_true = np.asarray(y_true)
    proba = np.asarray(proba)
    n_classes = proba.shape[1]
    pred = proba.argmax(1)
    conf = proba.max(1)
    thresholds = np.full(n_classes, np.inf)
    for c in range(n_classes):
        m = pred == c
        if m.sum() < min_support:
            continue
        order = np.argsort(-conf[m], kind="stable")
        s_conf = conf[m][order]
        s_ok = (y_true[m][order] == c).astype(np.float64)
        correct = np.cumsum(s_ok)
        total = np.arange(1, len(s_ok) + 1, dtype=np.float64)
        if shrinkage > 0:
            correct = correct + shrinkage * global_precision(y_true, proba, s_conf)
        # only cut between distinct confidence values
        last_of_tie = np.r_[s_conf[1:] != s_conf[:-1], True]
        prec = wilson_lower(correct, total + shrinkage, confidence)
        good = (prec >= target_precision) & (total >= min_support) & last_of_tie
        if good.any():
            i = np.flatnonzero(good).max()  # largest accepted set = lowest threshold
            thresholds[c] = s_conf[i]
    return thresholds


def route(proba: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted class, confidence, accepted mask)."""
    pred = proba.argmax(1)
    conf = proba.max(1)
    return pred, conf, conf >= thresholds[pred]
