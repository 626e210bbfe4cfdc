"""Drift of a night against a reference (the training data or the previous night).

Category mix: chi-square test of homogeneity on the 2 x K count table. Confidence:
two-sample Kolmogorov-Smirnov test. Drift is flagged when p < alpha, so the bar moves
with sample size (a fixed PSI cut-off flags noise on small nights and misses real
shifts on big ones). PSI is reported next to the tests for information only.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import chi2_contingency, ks_2samp

_EPS = 1e-4  # share given to an empty bin in PSI so the log stays finite


def psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    r = np.clip(np.asarray(ref_share, dtype=float), _EPS, None)
    c = np.clip(np.asarray(cur_share, dtype=float), _EPS, None)
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def category_drift(ref: Mapping[str, int], cur: Mapping[str, int], alpha: float) -> dict[str, Any]:
    """Chi-square test that two category count tables come from the same distribution."""
    cats = sorted(c for c in set(ref) | set(cur) if ref.get(c, 0) + cur.get(c, 0) > 0)
    r = np.array([ref.get(c, 0) for c in cats], dtype=float)
    c = np.array([cur.get(c, 0) for c in cats], dtype=float)
    out: dict[str, Any] = {"test": "chi2_contingency", "n_reference": int(r.sum()), "n_current": int(c.sum()),
                           "alpha": alpha, "statistic": None, "p_value": None, "dof": None, "psi": None,
                           "drift": False}
    if len(cats) < 2 or r.sum() == 0 or c.sum() == 0:
        out["note"] = "not enough data for a test"
        return out
    stat, p, dof, _ = chi2_contingency(np.vstack([r, c]))
    rs, cs = r / r.sum(), c / c.sum()
    order = np.argsort(-np.abs(cs - rs))[:5]
    out.update(statistic=float(stat), p_value=float(p), dof=int(dof), psi=psi(rs, cs), drift=bool(p < alpha),
               largest_shifts=[{"category": cats[i], "reference_share": float(rs[i]),
                                "current_share": float(cs[i])} for i in order])
    return out


def confidence_drift(ref: np.ndarray, cur: np.ndarray, alpha: float, bins: int = 10) -> dict[str, Any]:
    """Two-sample KS test on confidences; PSI over the reference's deciles."""
    ref = np.asarray(ref, dtype=float)
    cur = np.asarray(cur, dtype=float)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    out: dict[str, Any] = {"test": "ks_2samp", "n_reference": int(len(ref)), "n_current": int(len(cur)),
                           "alpha": alpha, "statistic": None, "p_value": None, "psi": None, "drift": False,
                           "reference_mean": float(ref.mean()) if len(ref) else None,
                           "current_mean": float(cur.mean()) if len(cur) else None}
    if len(ref) < 2 or len(cur) < 2:
        out["note"] = "not enough data for a test"
        return out
    res = ks_2samp(ref, cur)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
    out.update(statistic=float(res.statistic), p_value=float(res.pvalue),
               psi=psi(r / r.sum(), c / c.sum()), drift=bool(res.pvalue < alpha))
    return out


def training_reference(clf) -> tuple[dict[str, int], np.ndarray]:
    """Category counts (argmax) and confidences (max probability) of the model's held-out
    out-of-fold predictions on its training data: what the model saw as normal."""
    oof = np.asarray(clf.stack_.oof_proba_)
    counts = np.bincount(oof.argmax(1), minlength=len(clf.labels_))
    return {lab: int(n) for lab, n in zip(clf.labels_, counts)}, oof.max(1)


def drift_block(ref_counts: Mapping[str, int], ref_conf: np.ndarray, cur_counts: Mapping[str, int],
                cur_conf: np.ndarray, alpha: float) -> dict[str, Any]:
    cat = category_drift(ref_counts, cur_counts, alpha)
    conf = confidence_drift(ref_conf, cur_conf, alpha)
    return {"category": cat, "confidence": conf, "drift": bool(cat["drift"] or conf["drift"])}
