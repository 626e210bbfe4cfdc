"""Training labels from category paths: cut to a depth, fold rare leaves into their parent."""
from __future__ import annotations

import pandas as pd

from .cleaning import is_missing, object_series
from .schema import CATEGORY_SEP


def category_at_depth(path: str | None, depth: int) -> str | None:
    """The first ``depth`` parts of a " > " path; shorter paths come back unchanged."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if is_missing(path):
        return None
    return CATEGORY_SEP.join(str(path).split(CATEGORY_SEP)[:depth])


def _parent(label: str) -> str:
    return label.rsplit(CATEGORY_SEP, 1)[0]


def _depth(label: str) -> int:
    return label.count(CATEGORY_SEP) + 1


def fold_rare(labels: pd.Series, min_items: int) -> pd.Series:
    """Replace labels with fewer than ``min_items`` items by their parent path, until stable.

    The deepest rare labels fold first, one level per round, so a rare leaf can keep its
    parent alive (A>B>C with 8 items and A>B with 3 become A>B with 11, not A).
    Top-level labels never fold; missing labels stay missing. Index and name are kept.
    """
    out = object_series(labels)
    if min_items <= 1:
        return out
    while True:
        counts = out.dropna().value_counts()
        rare = [lab for lab, k in counts.items() if k < min_items and _depth(lab) > 1]
        if not rare:
            return out
        deepest = max(_depth(lab) for lab in rare)
        mapping = {lab: _parent(lab) for lab in rare if _depth(lab) == deepest}
        out = object_series([mapping.get(v, v) if v is not None else None for v in out],
                            index=out.index, name=out.name)


def make_labels(categories: pd.Series, depth: int | str, min_items: int) -> pd.Series:
    """category_at_depth then fold_rare; None stays None. ``depth="leaf"`` keeps full paths."""
    if depth == "leaf":
        depth = max((str(p).count(CATEGORY_SEP) + 1 for p in categories if not is_missing(p)), default=1)
    cut = object_series([category_at_depth(p, depth) for p in categories],
                        index=categories.index, name=categories.name)
    return fold_rare(cut, min_items)
