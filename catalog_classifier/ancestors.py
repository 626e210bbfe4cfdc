"""Stacks trained at ancestor depths (``stack.ancestor_depths``), refining the leaf stack top-down.

A stack trained at depth 2 knows an item's depth-1 category only as the sum of its depth-2
probabilities; the same base models and meta layer trained *at* depth 1 know it better
(Flipkart, out of fold: depth-1 accuracy 0.961 trained at depth 1 against 0.940 summed from
depth 2, and a depth-1 meta over the depth-2 base layer does not close the gap), and the
climb accepts most hard items at depth 1. So for each configured depth above the leaves a
whole stack (its own base models, meta, calibration) is trained on the same rows, inputs and
folds, with the leaf labels cut to that depth; the leaf probabilities are then rescaled so
that each ancestor's sum is that depth's own probability (``stacking.hierarchy.refine_top_down``).
Out of fold the same refinement is applied to every stack's out-of-fold scores, and the leaf
stack's thresholds are chosen on the refined ones (``StackedClassifier.rescore``).

Costs one stack fit and one stack prediction per configured depth.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from stacking import StackedClassifier
from stacking.hierarchy import refine_top_down

from .catalog.schema import CATEGORY_SEP


@dataclass
class AncestorStack:
    depth: int
    labels: list[str]  # this depth's classes: the distinct depth-d prefixes of the leaf labels
    group: np.ndarray  # leaf class index -> index into ``labels``
    stack: StackedClassifier


def ancestor_groups(leaf_labels: list[str], depth: int) -> tuple[list[str], np.ndarray]:
    """The depth-``depth`` classes of a leaf label list and each leaf's class among them (a
    leaf shallower than ``depth``, folded into its parent, is its own class)."""
    cut = [CATEGORY_SEP.join(str(l).split(CATEGORY_SEP)[:depth]) for l in leaf_labels]
    labels = sorted(set(cut))
    index = {l: i for i, l in enumerate(labels)}
    return labels, np.array([index[c] for c in cut], dtype=np.int64)


def depths_to_train(depths: Iterable[int], leaf_labels: list[str]) -> list[int]:
    """The configured depths that are real ancestors here: above the deepest label, with at
    least two classes and fewer classes than the leaves (else it would repeat the leaf stack)."""
    out = []
    for d in sorted(set(depths)):
        labels, _ = ancestor_groups(leaf_labels, d)
        if 2 <= len(labels) < len(leaf_labels):
            out.append(d)
    return out


def fit_ancestors(leaf_labels: list[str], y: np.ndarray, depths: Iterable[int],
                  new_stack: Callable[[], StackedClassifier], X, groups, passthrough, fold: np.ndarray,
                  say: Callable[[str], None] = lambda m: None) -> list[AncestorStack]:
    """One fitted stack per ancestor depth, on the leaf stack's rows, inputs and folds."""
    out = []
    for d in depths_to_train(depths, leaf_labels):
        labels, group = ancestor_groups(leaf_labels, d)
        say(f"ancestor depth {d}: {len(labels)} categories")
        st = new_stack().fit(X, group[np.asarray(y)], len(labels), groups=groups, passthrough=passthrough,
                             fold=fold)
        out.append(AncestorStack(d, labels, group, st))
    return out


def refine(proba: np.ndarray, ancestors: list[AncestorStack], ancestor_proba: list[np.ndarray]) -> np.ndarray:
    """Leaf probabilities rescaled so that every ancestor depth's sums are its own stack's."""
    if not ancestors:
        return proba
    pairs = sorted(zip(ancestors, ancestor_proba), key=lambda t: -t[0].depth)  # deepest first
    return refine_top_down(proba, [(a.group, p) for a, p in pairs])


def refine_oof(leaf: StackedClassifier, ancestors: list[AncestorStack]) -> None:
    """The leaf stack routes on out-of-fold scores refined by the ancestors' out-of-fold scores."""
    if ancestors:
        leaf.rescore(refine(leaf.oof_proba_, ancestors, [a.stack.oof_proba_ for a in ancestors]))


def ancestor_proba(ancestors: list[AncestorStack], X, passthrough,
                   base_proba: list[dict] | None = None) -> list[np.ndarray]:
    return [a.stack.predict_proba(X, passthrough, base_proba=None if base_proba is None else base_proba[i])
            for i, a in enumerate(ancestors)]


def without(ancestors: list[AncestorStack], base: str, passthrough) -> list[AncestorStack]:
    """Each ancestor stack with its meta re-fitted without base model ``base`` (ablations)."""
    return [AncestorStack(a.depth, a.labels, a.group,
                          a.stack.without([base], passthrough) if base in a.stack.base_models_ else a.stack)
            for a in ancestors]


def save_ancestors(path: Path, ancestors: list[AncestorStack]) -> None:
    path.mkdir(parents=True)
    for a in ancestors:
        a.stack.save(path / f"depth{a.depth}")
    (path / "ancestors.json").write_text(json.dumps(
        [{"depth": a.depth, "labels": a.labels} for a in ancestors], ensure_ascii=False, indent=1))


def load_ancestors(path: Path, leaf_labels: list[str], allowed, phase=None) -> list[AncestorStack]:
    out = []
    for entry in json.loads((path / "ancestors.json").read_text()):
        d = int(entry["depth"])
        labels, group = ancestor_groups(leaf_labels, d)
        if labels != entry["labels"]:
            raise ValueError(f"{path}: the depth-{d} stack's categories do not match the model's labels")
        out.append(AncestorStack(d, labels, group, StackedClassifier.load(path / f"depth{d}", allowed=allowed,
                                                                          phase=phase)))
    return out
