"""Taxonomy-aware routing: accept the deepest category the model is sure of.

Generic over label strings and a separator ("A > B > C"); knows nothing about catalogs.
Anchor: hierarchical selective classification (Goren, Galil, El-Yaniv, NeurIPS 2024).

The nodes are all strict prefixes of the labels (the *ancestors*); a node's probability is
the sum of its descendant leaves' calibrated probabilities (a sparse leaf-indicator matrix).
A label that is also a prefix of another label ("A > B" next to "A > B > C", after rare
leaves folded into their parent) is two things: a leaf class with its own probability and an
ancestor node whose probability covers its whole subtree.

For a predicted leaf L the climb is L itself (its leaf probability, the flat per-class
threshold), then, deepest first, each ancestor depth's likeliest node (usually L's ancestor),
with one threshold per depth; the item is accepted at the first candidate that clears its
threshold, never at the root. An accepted
node is correct when the true label is the node or below it (hierarchical precision).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .thresholds import lowest_threshold

SEP = " > "


class Hierarchy:
    """The ancestor nodes of a label list and the matrices to climb them."""

    def __init__(self, labels: list[str], sep: str = SEP):
        self.labels = list(labels)
        self.sep = sep
        parts = [str(l).split(sep) for l in self.labels]
        self.nodes = sorted({sep.join(p[:d]) for p in parts for d in range(1, len(p))})
        index = {n: j for j, n in enumerate(self.nodes)}
        self.node_depth = np.array([n.count(sep) + 1 for n in self.nodes], dtype=np.int64)
        self.label_depth = np.array([len(p) for p in parts], dtype=np.int64)
        self.max_depth = int(self.label_depth.max()) if len(parts) else 1
        # ancestor_at[c, d - 1]: node index of label c's ancestor at depth d (-1: none)
        self.ancestor_at = np.full((len(parts), max(self.max_depth - 1, 1)), -1, dtype=np.int64)
        rows, cols = [], []
        for c, p in enumerate(parts):
            for d in range(1, len(p)):
                j = index[sep.join(p[:d])]
                self.ancestor_at[c, d - 1] = j
                rows.append(c)
                cols.append(j)
        # label_node[c]: the node that label c's own string names (a folded leaf), -1: none
        self.label_node = np.array([index.get(l, -1) for l in self.labels], dtype=np.int64)
        own = np.flatnonzero(self.label_node >= 0)  # a folded leaf belongs to its own node's subtree
        rows, cols = rows + own.tolist(), cols + self.label_node[own].tolist()
        self.indicator = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)),
                                           shape=(len(parts), len(self.nodes)))

    def node_proba(self, proba: np.ndarray) -> np.ndarray:
        """[n, nodes]: each ancestor node's probability (sum of its descendant leaves)."""
        return np.asarray((self.indicator.T @ np.asarray(proba, dtype=np.float64).T).T)

    def depth_candidates(self, proba: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """The climb's candidate at each ancestor depth: per row and depth d (column d - 1), the
        depth-d node with the highest probability and that probability ([n, D-1]; -1 / NaN: no
        candidate). Not the leaf guess's own ancestor: when the leaf guess sits under the wrong
        parent, the likeliest parent is still often certain.

        A node less likely than the leaf guess is no candidate. Where every label reaches depth d
        this never happens (the guess's own depth-d ancestor is at least as likely); in a taxonomy
        of mixed depth a guess shallower than d has no depth-d ancestor, and the likeliest
        depth-d node can then hold 1% (the demo's full paths): accepting it would file the item
        where the model thinks it is not, however much precision budget the other rows leave."""
        n, D = len(proba), max(self.max_depth - 1, 1)
        nodes, prob = np.full((n, D), -1, dtype=np.int64), np.full((n, D), np.nan)
        at = [np.flatnonzero(self.node_depth == d) for d in range(1, D + 1)]
        for s in range(0, n, chunk):
            rows = np.asarray(proba[s:s + chunk], dtype=np.float64)
            block = self.node_proba(rows)
            guess = rows.max(1) - 1e-12  # a one-leaf node's sparse sum may differ in the last bit
            for d, cols in enumerate(at):
                if len(cols):
                    P = block[:, cols]
                    k = P.argmax(1)
                    best = P[np.arange(len(P)), k]
                    ok = best >= guess
                    nodes[s:s + chunk, d] = np.where(ok, cols[k], -1)
                    prob[s:s + chunk, d] = np.where(ok, best, np.nan)
        return nodes, prob

    def is_under(self, node, true_label: np.ndarray) -> np.ndarray:
        """Elementwise (broadcast): True where the label index's label is the node or below it
        (hierarchical correctness); a node index of -1 (none) is never right."""
        node, t = np.broadcast_arrays(np.asarray(node, dtype=np.int64), np.asarray(true_label, dtype=np.int64))
        col = np.where(node >= 0, self.node_depth[np.maximum(node, 0)] - 1, 0)
        return (node >= 0) & ((self.ancestor_at[t, col] == node) | (self.label_node[t] == node))


def refine_top_down(proba: np.ndarray, levels: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Leaf probabilities whose ancestor sums come from models trained at the ancestor depths.

    ``levels``: (group, group_proba) pairs, deepest first; ``group[c]`` is leaf class c's
    class at that depth and ``group_proba`` [n, G] that depth's own probabilities. Each step
    scales the leaves of every group by one factor so that they sum to the group's probability:
    within a group the leaves keep their ratios (the finer model's choice between siblings),
    while how much mass the group gets is the coarser model's. Shallower steps come later and
    rescale whole deeper groups, so every depth's sums hold at the end. Rows sum to 1.
    """
    q = np.array(proba, dtype=np.float64)
    n, L = q.shape
    for group, gp in levels:
        group = np.asarray(group, dtype=np.int64)
        gp = np.asarray(gp, dtype=np.float64)
        member = sparse.csr_matrix((np.ones(L), (np.arange(L), group)), shape=(L, gp.shape[1]))
        sums = np.asarray(q @ member)
        q *= (gp / np.maximum(sums, 1e-300))[:, group]
    return q / np.maximum(q.sum(1, keepdims=True), 1e-300)


def stage_delta(labels: list[str], delta: float, sep: str = SEP) -> float:
    """The guarantee mode's risk per test when climbing (Bonferroni): ``delta`` split over the
    leaf stage and one stage per ancestor depth, so that all of them hold together with
    probability >= 1 - delta. Flat labels (one level): ``delta`` itself."""
    depth = max((str(l).count(sep) + 1 for l in labels), default=1)
    return delta / depth


@dataclass
class Climb:
    """Where each row was accepted. ``step``: 0 = its leaf, d >= 1 = its ancestor at depth d,
    -1 = review. ``node``: the accepted ancestor's node index (-1 otherwise). ``confidence`` /
    ``threshold``: of the accepted candidate (the leaf's for review rows)."""

    pred: np.ndarray
    leaf_confidence: np.ndarray
    step: np.ndarray
    node: np.ndarray
    confidence: np.ndarray
    threshold: np.ndarray


class HierarchicalRouter:
    """Ancestor thresholds chosen bottom-up on out-of-fold scores, and the climb.

    ``fit(labels, y, proba, leaf_thresholds)``: rows are out-of-fold; ``leaf_thresholds`` the
    flat per-class thresholds (kept as they are, so coverage at full depth equals flat routing).
    One threshold per ancestor depth, deepest first. A row's candidate at a depth is that depth's
    likeliest node (``Hierarchy.depth_candidates``, not necessarily an ancestor of its leaf
    guess); a depth's candidate rows are those not accepted deeper; its threshold is the lowest at which
    *everything accepted so far* (leaf-accepted rows, deeper ancestors, and the candidates above
    it) reaches the target hierarchical precision (``stacking.thresholds.lowest_threshold`` with
    ``accepted``): the target is the precision of all accepted items, and rows accepted at their
    leaf run above it, leaving budget for the hard rows that climb.

    ``point``: the Wilson lower bound at ``confidence`` of that precision reaches the target
    (the budget is measured on the rows that also chose the leaf thresholds, optimistic without
    a margin). ``guaranteed``: each depth is a fixed-sequence Clopper-Pearson test at ``delta``
    of the whole accepted set; the caller gives the leaf thresholds and this router the same
    per-stage share (``stage_delta``: Bonferroni over the leaf stage and each ancestor depth),
    so the last stage's set, everything accepted, has precision >= target with probability
    >= 1 - delta for exchangeable new rows (conditional on the earlier stages' thresholds);
    with ``batch_ratio`` > 0 the measured precision of a batch that size (relative to these
    rows) does (``stacking.thresholds.lowest_threshold``).

    Why one threshold per depth, not per node: a node's candidates are a few dozen hard rows,
    its own threshold overfits them (scripts/hier_policies.py, the issue #14 harness).
    """

    def __init__(self, target_precision: float = 0.95, min_support: int = 10, confidence: float = 0.0,
                 method: str = "point", delta: float = 0.05, sep: str = SEP, batch_ratio: float = 0.0):
        self.target_precision = target_precision
        self.min_support = min_support
        self.confidence = confidence
        self.method = method
        self.delta = delta
        self.sep = sep
        self.batch_ratio = batch_ratio

    def fit(self, labels: list[str], y: np.ndarray, proba: np.ndarray,
            leaf_thresholds: np.ndarray) -> "HierarchicalRouter":
        self.hierarchy_ = Hierarchy(labels, self.sep)
        h, y = self.hierarchy_, np.asarray(y)
        pred = proba.argmax(1)
        accepted = proba.max(1) >= np.asarray(leaf_thresholds)[pred]
        correct = accepted & (pred == y)
        nodes, prob = h.depth_candidates(proba)
        self.node_thresholds_ = np.full(len(h.nodes), np.inf)
        for d in range(h.max_depth - 1, 0, -1):  # deepest ancestors first
            col, pcol = nodes[:, d - 1], prob[:, d - 1]
            cand = (col >= 0) & ~accepted
            right = h.is_under(col, y)
            t = lowest_threshold(pcol[cand], right[cand], self.target_precision, self.min_support,
                                 self.confidence, method=self.method, delta=self.delta,
                                 accepted=(float(correct.sum()), int(accepted.sum())),
                                 batch_ratio=self.batch_ratio)
            self.node_thresholds_[h.node_depth == d] = t
            take = cand & (pcol >= t)
            accepted |= take
            correct |= take & right
        return self

    def climb(self, proba: np.ndarray, leaf_thresholds: np.ndarray) -> Climb:
        h = self.hierarchy_
        pred = proba.argmax(1)
        leaf_conf = proba.max(1)
        leaf_thr = np.asarray(leaf_thresholds)[pred]
        step = np.where(leaf_conf >= leaf_thr, 0, -1)
        node = np.full(len(pred), -1)
        conf, thr = leaf_conf.copy(), leaf_thr.copy()
        nodes, prob = h.depth_candidates(proba)
        for d in range(h.max_depth - 1, 0, -1):
            col, pcol = nodes[:, d - 1], prob[:, d - 1]
            t = np.where(col >= 0, self.node_thresholds_[np.maximum(col, 0)], np.inf)
            take = (step < 0) & (col >= 0) & (pcol >= t)
            step[take], node[take], conf[take], thr[take] = d, col[take], pcol[take], t[take]
        return Climb(pred, leaf_conf, step, node, conf, thr)

    def to_dict(self) -> dict:
        return {"params": {"target_precision": self.target_precision, "min_support": self.min_support,
                           "confidence": self.confidence, "method": self.method, "delta": self.delta,
                           "sep": self.sep, "batch_ratio": self.batch_ratio},
                "labels": self.hierarchy_.labels,
                "node_thresholds": {n: (float(t) if np.isfinite(t) else None)
                                    for n, t in zip(self.hierarchy_.nodes, self.node_thresholds_)}}

    @classmethod
    def from_dict(cls, d: dict) -> "HierarchicalRouter":
        self = cls(**d["params"])
        self.hierarchy_ = Hierarchy(d["labels"], self.sep)
        thr = d["node_thresholds"]
        self.node_thresholds_ = np.array([np.inf if thr.get(n) is None else thr[n] for n in self.hierarchy_.nodes])
        return self
