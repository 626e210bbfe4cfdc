"""One prediction row per item: the climb (or flat thresholds), then the keyword rules.

Output columns (a contract the nightly job, the queue and the exports rely on):
``category`` the deepest accepted node (review rows: the leaf guess), ``confidence`` its
probability (a node's probability when partial), ``model_category`` / ``leaf_confidence`` the
leaf guess and its probability, ``status`` accepted | accepted_partial | review,
``accepted_depth`` the path parts of ``category`` (0 for review), ``threshold`` the accepted
candidate's threshold (the leaf's for review), ``reason`` why not (fully) accepted.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from stacking.hierarchy import HierarchicalRouter

from .catalog.schema import CATEGORY_SEP
from .rules import RuleSet


def route_items(items: pd.DataFrame, proba: np.ndarray, labels: list[str], leaf_thresholds: np.ndarray,
                hier: HierarchicalRouter | None, rules: RuleSet | None,
                image_reasons: list | None = None) -> pd.DataFrame:
    labels = np.array(labels, dtype=object)
    thr = np.asarray(leaf_thresholds)
    if hier is not None:
        c = hier.climb(proba, thr)
        pred, leaf_conf, step = c.pred, c.leaf_confidence, c.step
        nodes = np.array(hier.hierarchy_.nodes + [""], dtype=object)
        category = np.where(step > 0, nodes[c.node], labels[pred])
        conf, used_thr = c.confidence, c.threshold
    else:
        pred, leaf_conf = proba.argmax(1), proba.max(1)
        step = np.where(leaf_conf >= thr[pred], 0, -1)
        category, conf, used_thr = labels[pred], leaf_conf, thr[pred]
    leaf_conf = np.asarray(leaf_conf, dtype=np.float64)
    leaf_thr = thr[pred]
    status = np.select([step == 0, step > 0], ["accepted", "accepted_partial"], "review")
    depth = np.where(step >= 0, [path_depth(x) for x in category], 0).astype(np.int64)
    never = np.isinf(leaf_thr)
    leaf_why = np.where(never, "category is never auto-accepted (precision target not reachable)",
                        "confidence below the category's threshold")
    partial_why = [f"refine below {cat}: leaf {leaf} confidence {lc:.3f} below its threshold {lt:.3f}"
                   for cat, leaf, lc, lt in zip(category, labels[pred], leaf_conf, leaf_thr)]
    reason = leaf_why.astype(object)
    reason[step > 0] = np.array(partial_why, dtype=object)[step > 0]
    reason[step == 0] = None
    # the keyword rules override the climb (on the arrays, before the frame is built)
    fired = (rules or RuleSet([])).apply(items.reset_index(drop=True), list(labels[pred]))
    category, conf = np.array(category, dtype=object), np.array(conf, dtype=np.float64)
    used_thr = np.array(used_thr, dtype=np.float64)
    force_cat = (fired["rule_action"] == "category").to_numpy()
    if force_cat.any():
        forced = fired.loc[force_cat, "rule_category"].to_numpy()
        category[force_cat] = forced
        conf[force_cat] = leaf_conf[force_cat]  # as before the climb: the leaf guess's
        used_thr[force_cat] = leaf_thr[force_cat]
        status[force_cat] = "accepted"
        depth[force_cat] = [path_depth(x) for x in forced]
        reason[force_cat] = None
    force_rev = (fired["rule_action"] == "review").to_numpy()
    if force_rev.any():  # a forced review is a review of the leaf guess, whatever the climb accepted
        category[force_rev] = labels[pred][force_rev]
        conf[force_rev] = leaf_conf[force_rev]
        used_thr[force_rev] = leaf_thr[force_rev]
        status[force_rev] = "review"
        depth[force_rev] = 0
        reason[force_rev] = ("rule " + fired.loc[force_rev, "rule_id"].astype(str) + ": "
                             + fired.loc[force_rev, "rule_reason"].astype(str)).to_numpy()
    top = np.argsort(-proba, axis=1, kind="stable")[:, :3]  # top1 == pred, ties included
    out = pd.DataFrame({
        "item_id": items["item_id"].to_numpy(),
        "category": category,
        "confidence": conf,
        "model_category": labels[pred],
        "leaf_confidence": leaf_conf,
    })
    for k in range(min(3, proba.shape[1])):
        out[f"top{k + 1}"] = labels[top[:, k]]
        out[f"top{k + 1}_proba"] = proba[np.arange(len(proba)), top[:, k]].astype(np.float64)
    out["threshold"] = used_thr
    out["status"] = status
    out["accepted_depth"] = depth
    out["reason"] = pd.Series(reason, index=out.index, dtype=object)  # None where accepted, not NaN
    out["image_issue"] = list(image_reasons) if image_reasons is not None else None
    out["rule_id"] = fired["rule_id"].to_numpy()
    return out


def path_depth(category: str) -> int:
    return str(category).count(CATEGORY_SEP) + 1


def is_at_or_below(true_label, node) -> bool:
    """Hierarchical correctness: the true label is the node itself or one of its descendants."""
    return true_label == node or str(true_label).startswith(str(node) + CATEGORY_SEP)
