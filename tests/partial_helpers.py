"""Rows accepted at an ancestor, as the hierarchical router marks them (its contract).

Until the router itself says ``accepted_partial``, the tests take a real level-2 model's rows and
mark a review row partial where the probability of its leaf guess's parent (the sum of the
parent's leaves) is high: ``category`` = the parent, ``confidence`` = its probability,
``model_category``/``leaf_confidence`` = the leaf guess, ``accepted_depth`` = 1.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SEP = " > "


def parent_proba(proba: np.ndarray, labels: list[str]) -> tuple[list[str], np.ndarray]:
    parents = sorted({l.split(SEP)[0] for l in labels})
    member = np.array([[l.split(SEP)[0] == p for p in parents] for l in labels], dtype=float)
    return parents, proba @ member


def mark_partial(out: pd.DataFrame, proba: np.ndarray, labels: list[str], min_parent: float = 0.8) -> pd.DataFrame:
    """The router's contract on a flat route's rows (rows already partial are left as they are)."""
    out = out.copy()
    parents, pp = parent_proba(proba, labels)
    leaf = proba.max(1)
    if "leaf_confidence" not in out:
        out["leaf_confidence"] = leaf
        out["accepted_depth"] = np.where(out["status"] == "accepted",
                                         out["category"].astype(str).str.count(SEP) + 1, 0)
    parent = [l.split(SEP)[0] for l in out["model_category"]]
    p_parent = pp[np.arange(len(out)), [parents.index(p) for p in parent]]
    has_child = np.array([SEP in l for l in out["model_category"]])
    flip = (out["status"] == "review").to_numpy() & has_child & (p_parent >= min_parent) & out["rule_id"].isna().to_numpy()
    out.loc[flip, "status"] = "accepted_partial"
    out.loc[flip, "category"] = np.array(parent, dtype=object)[flip]
    out.loc[flip, "confidence"] = p_parent[flip]
    out.loc[flip, "accepted_depth"] = 1
    out.loc[flip, "reason"] = "leaf below its threshold; parent accepted"
    return out


def partial_router(clf, min_parent: float = 0.8):
    """Wrap this classifier instance's route so nightly runs see partial rows too."""
    flat = clf.route

    def route(items, proba, image_reasons=None):
        return mark_partial(flat(items, proba, image_reasons), proba, list(clf.labels_), min_parent)

    clf.route = route
    return clf
