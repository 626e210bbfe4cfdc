"""Compare the climb's ancestor-threshold policies offline on ``scripts/hier_dump.py`` output.

Per outer fold: leaf thresholds as the product chooses them (flat, unchanged), ancestor
thresholds by each policy (``router``: stacking.hierarchy.HierarchicalRouter as shipped; the
others follow the leaf guess's own ancestors) on the fold model's calibration rows, then the climb on the fold's
held-out rows. Prints pooled held-out coverage at full / any depth and hierarchical precision,
and the folds whose precision is under the target. Model only (no rules).

    PYTHONPATH=. .venv/bin/python scripts/hier_policies.py /tmp/hier_dump/fk2 [--shrinkage 200]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stacking.hierarchy import HierarchicalRouter, Hierarchy
from stacking.thresholds import lowest_threshold, select_thresholds


def path_proba(h: Hierarchy, proba: np.ndarray, pred: np.ndarray, chunk: int = 4096):
    """For each row, its predicted leaf's ancestors by depth: node indices [n, D-1] (-1: none)
    and their probabilities (NaN: none). The earlier climb's candidates, which the product
    replaced by each depth's likeliest node (Hierarchy.depth_candidates); kept to compare."""
    nodes = h.ancestor_at[np.asarray(pred)]
    prob = np.full(nodes.shape, np.nan)
    for s in range(0, len(nodes), chunk):
        block = h.node_proba(np.asarray(proba[s:s + chunk]))
        nb = nodes[s:s + chunk]
        has = nb >= 0
        prob[s:s + chunk][has] = block[np.nonzero(has)[0], nb[has]]
    return nodes, prob


def climb(h: Hierarchy, node_thr: np.ndarray, proba, leaf_thr):
    """The climb along the leaf guess's own ancestors (the policies below choose for it)."""
    from types import SimpleNamespace
    pred = proba.argmax(1)
    step = np.where(proba.max(1) >= leaf_thr[pred], 0, -1)
    node = np.full(len(pred), -1)
    nodes, prob = path_proba(h, proba, pred)
    for d in range(h.max_depth - 1, 0, -1):
        col, pcol = nodes[:, d - 1], prob[:, d - 1]
        t = np.where(col >= 0, node_thr[np.maximum(col, 0)], np.inf)
        take = (step < 0) & (col >= 0) & (pcol >= t)
        step[take], node[take] = d, col[take]
    return SimpleNamespace(pred=pred, step=step, node=node)


def right_of(h: Hierarchy, c, y):
    ok = np.zeros(len(y), bool)
    leaf = c.step == 0
    ok[leaf] = c.pred[leaf] == y[leaf]
    anc = c.step > 0
    ok[anc] = h.is_under(c.node[anc], y[anc])
    return ok


class Tally:
    """Held-out rows pooled over folds: full / any depth, hierarchical precision, folds under target."""

    def __init__(self, target: float):
        self.target, self.n, self.full, self.anyd, self.ok, self.bad = target, 0, 0, 0, 0, []

    def add(self, k: int, h: Hierarchy, c, y) -> None:
        right, acc = right_of(h, c, y), c.step >= 0
        self.n += len(y)
        self.full += int((c.step == 0).sum())
        self.anyd += int(acc.sum())
        self.ok += int(right[acc].sum())
        fp = right[acc].mean() if acc.any() else 1.0
        if fp < self.target:
            self.bad.append(f"{k}:{fp:.3f}")

    def __str__(self) -> str:
        return (f"full {self.full / self.n:.3f} any {self.anyd / self.n:.3f} "
                f"hprec {self.ok / max(self.anyd, 1):.4f}  folds<target {self.bad}")


def per_depth(h, y, proba, leaf_thr, target, method, delta, conf, joint, shared=False, min_support=10,
              stage_delta=None):
    """One threshold per ancestor depth (or one for all depths), deepest first; ``joint``:
    judged together with everything accepted before."""
    pred = proba.argmax(1)
    acc = proba.max(1) >= leaf_thr[pred]
    ok = acc & (pred == y)
    nodes, prob = path_proba(h, proba, pred)
    thr = np.full(len(h.nodes), np.inf)
    if shared:
        # one threshold t for all ancestor depths: scan a grid
        best = np.inf
        grid = np.unique(np.nan_to_num(prob[~acc], nan=2.0))[::-1]
        for t in grid:
            if t > 1:
                continue
            tt = np.where(h.node_depth >= 1, t, np.inf)
            c = climb(h, tt, proba, leaf_thr)
            a = c.step >= 0
            r = right_of(h, c, y)
            from stacking.thresholds import wilson_lower
            if wilson_lower(np.array([r[a].sum()]), np.array([a.sum()]), conf)[0] >= target:
                best = t
        return np.where(h.node_depth >= 1, best, np.inf)
    for d in range(h.max_depth - 1, 0, -1):
        col, pcol = nodes[:, d - 1], prob[:, d - 1]
        cand = (col >= 0) & ~acc
        right = h.is_under(col, y)
        base = (float(ok.sum()), int(acc.sum())) if joint else (0, 0)
        t = lowest_threshold(pcol[cand], right[cand], target, min_support, conf, method=method,
                             delta=stage_delta or delta, accepted=base)
        thr[h.node_depth == d] = t
        take = cand & (pcol >= t)
        acc |= take
        ok |= take & right
    return thr


def old_router(h, y, proba, leaf_thr, target, method, delta=0.05, min_support=10):
    """The committed rule (before issue #14's rework): per-node point / per-depth guaranteed,
    each node held to the target on its own candidate rows."""
    pred = proba.argmax(1)
    accepted = proba.max(1) >= leaf_thr[pred]
    nodes, prob = path_proba(h, proba, pred)
    thr = np.full(len(h.nodes), np.inf)
    for d in range(h.max_depth - 1, 0, -1):
        col, pcol = nodes[:, d - 1], prob[:, d - 1]
        cand = (col >= 0) & ~accepted
        right = h.is_under(col, y)
        if method == "guaranteed":
            thr[np.unique(col[cand])] = lowest_threshold(pcol[cand], right[cand], target, max(min_support, 149),
                                                          method=method, delta=delta)
        else:
            for j in np.unique(col[cand]):
                rows = cand & (col == j)
                thr[j] = lowest_threshold(pcol[rows], right[rows], target, min_support)
        t = np.where(col >= 0, thr[np.maximum(col, 0)], np.inf)
        accepted |= (col >= 0) & (pcol >= t)
    return thr


def temper(proba, T):
    z = np.log(np.clip(proba, 1e-300, None)) / T
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def depth_temperatures(h, y, proba, grid=(0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0)):
    """Per ancestor depth, the temperature whose summed node probabilities give the true
    depth-d node the best log-likelihood (rows whose label is at least that deep)."""
    out = {}
    for d in range(1, h.max_depth):
        true = h.ancestor_at[y, d - 1]
        true = np.where(true >= 0, true, h.label_node[y])
        m = (true >= 0) & (h.node_depth[np.maximum(true, 0)] == d)
        best = (np.inf, 1.0)
        for T in grid:
            P = h.node_proba(temper(proba[m], T))
            nll = -np.log(np.clip(P[np.arange(m.sum()), true[m]], 1e-12, None)).mean()
            best = min(best, (nll, T))
        out[d] = best[1]
    return out


def tempered_route(h, y, proba, leaf_thr, target, conf, temps, test_p, min_support=10):
    """Joint per-depth rule on tempered node probabilities; returns (step, node, right) on test."""
    def paths(P):
        pred = P.argmax(1)
        cols, probs = [], []
        for d in range(1, h.max_depth):
            n_, p_ = path_proba(h, temper(P, temps[d]), pred)
            cols.append(n_[:, d - 1]); probs.append(p_[:, d - 1])
        return pred, cols, probs
    pred, cols, probs = paths(proba)
    acc = proba.max(1) >= leaf_thr[pred]
    ok = acc & (pred == y)
    thr = {}
    for d in range(h.max_depth - 1, 0, -1):
        col, pcol = cols[d - 1], probs[d - 1]
        cand = (col >= 0) & ~acc
        right = h.is_under(col, y)
        t = lowest_threshold(pcol[cand], right[cand], target, min_support, conf,
                             accepted=(float(ok.sum()), int(acc.sum())))
        thr[d] = t
        take = cand & (pcol >= t)
        acc |= take
        ok |= take & right
    pred, cols, probs = paths(test_p)
    step = np.where(test_p.max(1) >= leaf_thr[pred], 0, -1)
    node = np.full(len(pred), -1)
    for d in range(h.max_depth - 1, 0, -1):
        take = (step < 0) & (cols[d - 1] >= 0) & (probs[d - 1] >= thr[d])
        step[take], node[take] = d, cols[d - 1][take]
    return step, node, pred


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--shrinkage", type=float, default=200)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.95, 0.98])
    a = ap.parse_args()
    folds = [np.load(f, allow_pickle=True) for f in sorted(Path(a.dump).glob("fold*.npz"))]
    policies = {
        "current per-node": None,
        "per-depth pooled": dict(method="point", conf=0.0, joint=False),
        "joint depth c0": dict(method="point", conf=0.0, joint=True),
        "joint depth c.5": dict(method="point", conf=0.5, joint=True),
        "joint depth c.8": dict(method="point", conf=0.8, joint=True),
        "joint depth c.9": dict(method="point", conf=0.9, joint=True),
        "joint depth c.95": dict(method="point", conf=0.95, joint=True),
        "joint shared c.8": dict(method="point", conf=0.8, joint=True, shared=True),
        "tempered c0": dict(temp=0.0),
        "tempered c.8": dict(temp=0.8),
        "tempered c.95": dict(temp=0.95),
        "router c.9": dict(router=0.9),
        "router c.95": dict(router=0.95),
        "G router d/D": dict(router=0.0, method="guaranteed"),
        "G current": "G",
        "G joint d/D": dict(method="guaranteed", conf=0.0, joint=True, bonf=True),
        "G joint d": dict(method="guaranteed", conf=0.0, joint=True),
    }
    for t in a.targets:
        print(f"== target {t}  ({len(folds)} folds)")
        for name, pol in policies.items():
            tally = Tally(t)
            for k, f in enumerate(folds):
                labels = list(f["labels"])
                h = Hierarchy(labels)
                cp, cy, tp, ty = f["cal_p"], f["cal_y"], f["test_p"], f["test_y"]
                guar = pol == "G" or (isinstance(pol, dict) and pol.get("method") == "guaranteed")
                D = h.max_depth
                ldelta = 0.05 / D if isinstance(pol, dict) and pol.get("bonf") else 0.05
                leaf = select_thresholds(cy, cp, t, 10, 0.0, 0.0 if guar else a.shrinkage,
                                         "guaranteed" if guar else "point", ldelta)
                if isinstance(pol, dict) and "router" in pol:  # the product's rule (likeliest node per depth)
                    if guar:
                        leaf = select_thresholds(cy, cp, t, 10, method="guaranteed", delta=0.05 / D)
                    r = HierarchicalRouter(t, 10, pol["router"], pol.get("method", "point"), 0.05 / D).fit(
                        labels, cy, cp, leaf)
                    tally.add(k, h, r.climb(tp, leaf), ty)
                    continue
                elif isinstance(pol, dict) and "temp" in pol:
                    temps = depth_temperatures(h, cy, cp)
                    step, node, pred = tempered_route(h, cy, cp, leaf, t, pol["temp"], temps, tp)
                    from types import SimpleNamespace
                    tally.add(k, h, SimpleNamespace(step=step, node=node, pred=pred), ty)
                    if t == a.targets[0] and k == 0:
                        print("   temps", temps)
                    continue
                if pol is None or pol == "G":
                    thr = old_router(h, cy, cp, leaf, t, "guaranteed" if guar else "point")
                else:
                    p = dict(pol)
                    bonf = p.pop("bonf", False)
                    thr = per_depth(h, cy, cp, leaf, t, p.pop("method"), 0.05, p.pop("conf"), p.pop("joint"),
                                    stage_delta=ldelta if bonf else None, **p)
                tally.add(k, h, climb(h, thr, tp, leaf), ty)
            print(f"{name:18s} {tally}")


if __name__ == "__main__":
    main()
