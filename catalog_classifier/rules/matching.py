"""How a rule meets an item: the text rules see, keyword patterns, and the per-rule match.

Matching runs on the catalog's cleaned text, lower-cased; keywords match whole words or phrases only.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..catalog.cleaning import clean_text
from ..catalog.schema import CATEGORY_SEP


def normalize_text(value: Any) -> str:
    """The text rules see: the catalog's one cleaning (``clean_text``: NFKC, control characters as
    spaces), lower-cased; None/NaN become "". Item fields arrive cleaned already (it is idempotent);
    rule keywords go through the same steps, so both sides read alike."""
    return clean_text(value).lower()


def keyword_pattern(keywords: Iterable[str]) -> re.Pattern:
    """One regex matching any of the keywords as a whole word/phrase (any whitespace between words).

    The word-boundary check on the left is a lookbehind placed *after* the first word, so every
    alternative starts with a literal and `re` can skip ahead quickly (about 20x faster).
    """
    bodies = []
    for k in keywords:
        first, *rest = (re.escape(w) for w in normalize_text(k).split())
        bodies.append(first + rf"(?<!\w{first})" + "".join(r"\s+" + w for w in rest))
    return re.compile("(?:" + "|".join(bodies) + r")(?!\w)")


def field_texts(items: pd.DataFrame, rules: list) -> dict[str, np.ndarray]:
    used = {f for r in rules for f in r.fields}
    out = {}
    for f in used:
        if f in items.columns:
            out[f] = np.array([normalize_text(v) for v in items[f].tolist()], dtype=object)
        else:
            out[f] = np.full(len(items), "", dtype=object)
    return out


def predicted_labels(predicted: list[str] | None, n: int) -> np.ndarray | None:
    if predicted is None:
        return None
    pred = np.asarray(list(predicted), dtype=object)
    if pred.shape != (n,):
        raise ValueError(f"predicted has {pred.size} entries for {n} items")
    return pred


def _in_family(label: Any, wanted: tuple[str, ...]) -> bool:
    """label equals one of ``wanted`` or lies below one of them in the category path."""
    if not isinstance(label, str):
        return False
    return any(label == w or label.startswith(w + CATEGORY_SEP) for w in wanted)


def match_rule(rule, texts: dict[str, np.ndarray], pred: np.ndarray | None,
           idx: np.ndarray) -> np.ndarray:
    """Positions among ``idx`` that the rule matches; each condition narrows the candidates."""
    if rule.if_predicted is not None:
        if pred is None:
            return idx[:0]
        ok = {lab: _in_family(lab, rule.if_predicted) for lab in set(pred[idx].tolist())}
        idx = idx[np.fromiter((ok[p] for p in pred[idx]), dtype=bool, count=idx.size)]
    for f, must, must_not in rule.compiled():
        for pat in must:
            if idx.size == 0:
                return idx
            idx = idx[_contains(texts[f][idx], pat)]
        if must_not is not None and idx.size:
            idx = idx[~_contains(texts[f][idx], must_not)]
    return idx


def _contains(texts: np.ndarray, pat: re.Pattern) -> np.ndarray:
    # what pandas' str.contains does for object arrays, minus its warning about regex groups
    return np.fromiter((pat.search(t) is not None for t in texts), dtype=bool, count=len(texts))
