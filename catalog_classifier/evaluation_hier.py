"""Evaluation of the taxonomy-aware routing (the climb), next to the flat product.

Per target: coverage at full depth (status ``accepted``), coverage at any depth (``accepted``
or ``accepted_partial``), hierarchical precision (an accepted category is right when the true
label is it or below it) and the mean accepted depth. ``stack_guaranteed`` routes the same
models with Learn-then-Test thresholds (``stack.threshold_method = "guaranteed"``) and reports
per fold the precision with its Clopper-Pearson interval. Thresholds always come from scores
the judged rows took no part in (nested: the fold model's inner out-of-fold layer; oof:
the other folds).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stacking.hierarchy import Hierarchy, HierarchicalRouter, stage_delta
from stacking.thresholds import batch_ratio, clopper_pearson_interval, select_for

from .catalog.schema import CATEGORY_SEP
from .reporting import plot_risk_coverage, risk_coverage_curve
from .routing import is_at_or_below, path_depth

GUARANTEED = "stack_guaranteed"
ACCEPTED = ("accepted", "accepted_partial")


def _key(t: float) -> str:
    return f"{int(round(t * 100)):03d}"


def new_store(n: int, targets) -> dict:
    """(variant, target) -> [category, status] arrays over all rows, filled fold by fold."""
    return {(v, t): [np.full(n, None, dtype=object), np.full(n, "review", dtype=object)]
            for v in ("stack", GUARANTEED) for t in targets}


def put(store: dict, variant: str, t: float, rows: np.ndarray, category, status) -> None:
    store[variant, t][0][rows] = np.asarray(category, dtype=object)
    store[variant, t][1][rows] = np.asarray(status, dtype=object)


def guaranteed_fold(clf, items, proba: np.ndarray, targets) -> dict:
    """The fold model routed (with its rules) in guarantee mode: target -> routed frame."""
    out = {}
    for t in targets:
        clf.set_target_precision(t, method="guaranteed")
        out[t] = clf.route(items, proba)
    return out


def climb_labels(router: HierarchicalRouter, proba: np.ndarray, leaf_thr: np.ndarray, labels) -> tuple:
    """(category, status) of the climb without rules."""
    c = router.climb(proba, leaf_thr)
    nodes = np.array(router.hierarchy_.nodes + [""], dtype=object)
    cat = np.where(c.step > 0, nodes[c.node], np.array(labels, dtype=object)[c.pred])
    status = np.select([c.step == 0, c.step > 0], ["accepted", "accepted_partial"], "review")
    return cat, status


def crossfit_store(labels, y, proba, fold, targets, stack_params) -> dict:
    """Cross-fitted climb: fold k routed with leaf and ancestor thresholds from the other folds."""
    s, store = stack_params, new_store(len(y), targets)
    delta = stage_delta(labels, s.risk_delta, CATEGORY_SEP)  # as the classifier splits it when climbing
    for variant, method in (("stack", s.threshold_method), (GUARANTEED, "guaranteed")):
        for t in targets:
            for k in np.unique(fold):
                te, tr = fold == k, fold != k
                thr = select_for(s, y[tr], proba[tr], t, method, delta)
                router = HierarchicalRouter(t, s.min_support, s.ancestor_confidence, method, delta,
                                            CATEGORY_SEP, batch_ratio(s, int(tr.sum()))).fit(
                                                labels, y[tr], proba[tr], thr)
                put(store, variant, t, np.flatnonzero(te), *climb_labels(router, proba[te], thr, labels))
    return store


def summary(true_labels, category, status) -> dict:
    acc = np.isin(status, ACCEPTED)
    right = np.array([is_at_or_below(tl, c) for tl, c in zip(true_labels[acc], category[acc])], dtype=bool)
    return {"coverage_full_depth": float((status == "accepted").mean()) if len(status) else 0.0,
            "coverage_any_depth": float(acc.mean()) if len(status) else 0.0,
            "hierarchical_precision": float(right.mean()) if acc.any() else None,
            "mean_accepted_depth": float(np.mean([path_depth(c) for c in category[acc]])) if acc.any() else None,
            "n_accepted": int(acc.sum()), "n_correct": int(right.sum())}


def hier_fields(store: dict, variant: str, true_labels, targets) -> dict:
    rec = {}
    for t in targets:
        k, sm = _key(t), summary(true_labels, *store[variant, t])
        rec[f"coverage_full_depth_at_{k}"] = sm["coverage_full_depth"]
        rec[f"coverage_any_depth_at_{k}"] = sm["coverage_any_depth"]
        rec[f"hierarchical_precision_at_{k}"] = sm["hierarchical_precision"]
        if k == "098":
            rec["mean_accepted_depth"] = sm["mean_accepted_depth"]
    return rec


def guaranteed_record(base: dict, store: dict, true_labels, fold, targets, delta: float) -> dict:
    """The ``stack_guaranteed`` record: the stack's fields in guarantee mode plus per-fold
    precision with its two-sided Clopper-Pearson interval (level 1 - delta)."""
    rec = {k: base[k] for k in ("catalog", "level", "n_items", "n_categories", "cv")}
    rec.update({"model": GUARANTEED, "risk_delta": delta})
    rec.update(hier_fields(store, GUARANTEED, true_labels, targets))
    for t in targets:
        cat, status = store[GUARANTEED, t]
        full = status == "accepted"
        rec[f"coverage_at_{_key(t)}"] = float(full.mean())
        rec[f"precision_at_{_key(t)}"] = (float(np.mean(cat[full] == true_labels[full])) if full.any() else None)
    per_fold = []
    for f in np.unique(fold):
        m, r = fold == f, {"fold": int(f), "n_test": int((fold == f).sum())}
        for t in targets:
            k = _key(t)
            sm = summary(true_labels[m], store[GUARANTEED, t][0][m], store[GUARANTEED, t][1][m])
            lo, hi = clopper_pearson_interval(sm["n_correct"], sm["n_accepted"], delta)
            r.update({f"hierarchical_precision_at_{k}": sm["hierarchical_precision"],
                      f"precision_ci_at_{k}": [lo, hi],
                      f"coverage_any_depth_at_{k}": sm["coverage_any_depth"],
                      f"coverage_full_depth_at_{k}": sm["coverage_full_depth"], f"n_accepted_at_{k}": sm["n_accepted"],
                      f"meets_target_at_{k}": (None if sm["hierarchical_precision"] is None
                                               else bool(sm["hierarchical_precision"] >= t))})
        per_fold.append(r)
    rec["per_fold"] = per_fold
    return rec


def hier_risk_coverage_curve(labels, y, proba, n_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """One global threshold for every candidate: each item climbs to its deepest node with
    probability >= it; coverage (accepted at any depth) and hierarchical error among the accepted."""
    h, y = Hierarchy(labels, CATEGORY_SEP), np.asarray(y)
    pred = proba.argmax(1)
    nodes, prob = h.depth_candidates(proba)
    cand = [proba.max(1)] + [prob[:, d - 1] for d in range(h.max_depth - 1, 0, -1)]
    right = [pred == y] + [h.is_under(nodes[:, d - 1], y) for d in range(h.max_depth - 1, 0, -1)]
    cand = np.nan_to_num(np.stack(cand, 1), nan=-np.inf)
    right = np.stack(right, 1)
    cov, risk = [], []
    for th in np.unique(np.quantile(cand.max(1), np.linspace(0, 1, n_points))):
        ok = cand >= th
        acc = ok.any(1)
        if not acc.any():
            continue
        first = ok.argmax(1)
        cov.append(acc.mean())
        risk.append(1 - right[np.arange(len(y)), first][acc].mean())
    order = np.argsort(cov)
    return np.asarray(cov)[order], np.asarray(risk)[order]


def save_hier_picture(res, out_dir: Path, targets) -> Path:
    """``<catalog>_L<level>_hier_risk_coverage.png``: the climb's hierarchical risk next to flat."""
    p = res.proba["stack"]
    curves = {"flat (leaf)": risk_coverage_curve(res.y, p),
              "climbing (any depth)": hier_risk_coverage_curve(res.labels, res.y, p)}
    points, true_labels = {}, np.array(res.labels, dtype=object)[res.y]
    for t in targets:
        if ("stack", t) in res.hier:
            sm = summary(true_labels, *res.hier["stack", t])
            if sm["n_accepted"]:
                points[f"climb @ {t}"] = (sm["coverage_any_depth"], 1 - sm["hierarchical_precision"])
    return plot_risk_coverage(curves, out_dir / f"{res.catalog}_L{res.level}_hier_risk_coverage.png",
                              target_points=points)
